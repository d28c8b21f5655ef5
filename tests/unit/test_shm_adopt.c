/*
 * test_shm_adopt.c — what an existing /dev/shm/<name> must be before it is used: a writer refuses a
 * symlink, a directory, another owner's file and any group/other bit; a reader refuses a symlink,
 * a foreign non-root owner and group/other write. A refused segment is left as it was, never
 * recreated. Runs as root (chown); exits 77 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "shm.h"

static char name[64], path[128];

/* A valid segment of ours, then its owner and mode changed as a test needs. */
static void make_seg(uid_t uid, mode_t mode)
{
    struct shm_params p = {.capacity = 64};
    struct shm h;

    unlink(path);
    CHECK_INT(shm_create(&h, name, &p), 0);
    shm_detach(&h);
    CHECK_INT(chown(path, uid, (gid_t)-1), 0);
    CHECK_INT(chmod(path, mode), 0);
}

static int open_rw(void)
{
    struct shm_params p = {.capacity = 64};
    struct shm h;
    int rc = shm_open_or_create(&h, name, &p, NULL);

    if (rc == 0)
        shm_detach(&h);
    return rc;
}

static int attach_ro(void)
{
    struct shm h;
    int rc = shm_attach(&h, name, 0);

    if (rc == 0)
        shm_detach(&h);
    return rc;
}

int main(void)
{
    struct stat st;

    if (geteuid() != 0) {
        printf("test_shm_adopt: skipped, needs root to chown\n");
        return 77;
    }
    snprintf(name, sizeof(name), "ac-adopt-%d", (int)getpid());
    snprintf(path, sizeof(path), "/dev/shm/%s", name);

    /* a symlink planted under our name: refused by both, the link and its target untouched */
    unlink(path);
    CHECK_INT(symlink("/etc/hostname", path), 0);
    CHECK_INT(open_rw(), -ELOOP);
    CHECK_INT(attach_ro(), -ELOOP);
    CHECK(lstat(path, &st) == 0 && S_ISLNK(st.st_mode), "expected the symlink left in place");
    unlink(path);

    /* a directory */
    CHECK_INT(mkdir(path, 0700), 0);
    CHECK(open_rw() < 0, "expected a directory refused");
    rmdir(path);

    /* another owner: refused by the writer and by a reader (not root, not us) */
    make_seg(65534, 0600);
    CHECK_INT(open_rw(), -EPERM);
    CHECK_INT(attach_ro(), -EPERM);
    CHECK(stat(path, &st) == 0 && st.st_uid == 65534, "expected the foreign segment kept");

    /* loose modes */
    make_seg(0, 0666);
    CHECK_INT(open_rw(), -EACCES);
    CHECK_INT(attach_ro(), -EACCES);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0666, "expected the mode left as it was");
    make_seg(0, 0620);
    CHECK_INT(open_rw(), -EACCES);
    CHECK_INT(attach_ro(), -EACCES);
    make_seg(0, 0604);
    CHECK_INT(open_rw(), -EACCES);
    CHECK_INT(attach_ro(), 0); /* others may read; nobody else can write */
    make_seg(0, 0640);
    CHECK_INT(open_rw(), -EACCES); /* no group option in shm yet */
    CHECK_INT(attach_ro(), 0);

    /* accepted: our own 0600 segment */
    make_seg(0, 0600);
    CHECK_INT(open_rw(), 0);
    CHECK_INT(attach_ro(), 0);

    /* absent: created with mode 0600 */
    unlink(path);
    CHECK_INT(open_rw(), 0);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "expected a new segment at 0600");
    unlink(path);
    return check_done("test_shm_adopt");
}
