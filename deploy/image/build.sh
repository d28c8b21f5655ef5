#!/bin/sh
# build.sh — the authcached OCI image, offline: a Debian 12 root filesystem from the archive with only
# the runtime libraries (mmdebstrap, cached as build/image-rootfs.tar so later runs take seconds), the
# binaries from build/, a non-root user 65532, and an OCI layout made by umoci at build/image
# (tag authcache:latest) plus build/authcache-image.tar, an OCI archive of it. Same image as the
# Dockerfile's. Run as root from the repo root (`make image`). Prints the image's sizes.
set -eu
B=${BUILD:-build}
SUITE=${SUITE:-bookworm}
LIBS=liburing2,libssl3,libxxhash0,libjemalloc2,libjwt0
ROOTFS_TAR=$B/image-rootfs.tar
LAYOUT=$B/image
BUNDLE=$B/image-bundle

for t in mmdebstrap umoci; do
    command -v $t >/dev/null || { echo "build.sh: $t is missing (make deps installs it)" >&2; exit 3; }
done
test -x "$B/authcached" && test -x "$B/authcache" || { echo "build.sh: run make first" >&2; exit 2; }

# The rootfs depends only on the suite and the library list: rebuild when those change.
if ! test -s "$ROOTFS_TAR" || test "$(cat "$ROOTFS_TAR.key" 2>/dev/null)" != "$SUITE $LIBS"; then
    mmdebstrap --variant=essential --include="$LIBS" \
        --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-exclude=/usr/share/man/* \
        --dpkgopt=path-exclude=/usr/share/locale/* --dpkgopt=path-exclude=/usr/share/info/* \
        "$SUITE" "$B/image-rootfs.tmp.tar"
    mv "$B/image-rootfs.tmp.tar" "$ROOTFS_TAR"
    echo "$SUITE $LIBS" > "$ROOTFS_TAR.key"
fi

rm -rf "$LAYOUT" "$BUNDLE"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:latest"
umoci unpack --image "$LAYOUT:latest" "$BUNDLE"
tar -C "$BUNDLE/rootfs" -xf "$ROOTFS_TAR"
install -m 755 "$B/authcached" "$B/authcache" "$BUNDLE/rootfs/usr/bin/"
echo 'authcache:x:65532:65532:authcache:/nonexistent:/usr/sbin/nologin' >> "$BUNDLE/rootfs/etc/passwd"
echo 'authcache:x:65532:' >> "$BUNDLE/rootfs/etc/group"
umoci repack --image "$LAYOUT:latest" "$BUNDLE"
rm -rf "$BUNDLE"
umoci config --image "$LAYOUT:latest" \
    --config.entrypoint /usr/bin/authcached --config.user 65532:65532 \
    --config.exposedports 9300/tcp --config.exposedports 9301/tcp \
    --config.label org.opencontainers.image.title=authcached \
    --config.label "org.opencontainers.image.description=io_uring forward-auth cache daemon" \
    --config.label org.opencontainers.image.base.name=debian:$SUITE
umoci gc --layout "$LAYOUT"
tar -C "$LAYOUT" -cf "$B/authcache-image.tar" .

layers=$(find "$LAYOUT/blobs" -type f -size +100k -exec du -cb {} + | tail -1 | cut -f1)
unpacked=$(tar -tvf "$ROOTFS_TAR" | awk '{s += $3} END {print s}')
echo "image: $LAYOUT (authcache:latest), $B/authcache-image.tar"
echo "image size: compressed layer $((layers / 1024)) KiB, rootfs unpacked $(( (unpacked + $(stat -c %s "$B/authcached") + $(stat -c %s "$B/authcache")) / 1024)) KiB"
