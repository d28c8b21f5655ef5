/*
 * floor.c — the benchmark's floor: the least any forward-auth endpoint can do per request on this
 * kernel. One thread, one io_uring: a multishot accept, a multishot receive per connection into a
 * ring of provided buffers, and one send per batch of answers. Every request gets the same fixed
 * answer — "200 OK", the identity headers read from --headers at start, "Content-Length: 0" — so
 * whatever authcached spends above this is the cost of its parsing, lookup and bookkeeping.
 *
 * What it reads of a request: only where it ends ("\r\n\r\n", possibly split across receives) and
 * whether it carries "Connection: close" (then that request is answered with "Connection: close"
 * and the connection is shut once the answer is out; bytes after it are ignored). Request bodies
 * are not supported: a forward-auth check has none. Pipelined requests are answered in order, many
 * per send: the answers are sent straight out of one read-only block holding BLOCK copies of the
 * answer, so nothing is copied or allocated per request. A request split across receives is
 * carried over in a per-connection buffer (the only allocation, and a rare one).
 *
 * Invariants: at most one send and one multishot receive are in flight per connection; a
 * connection's fd is closed only when neither is, so no completion can name a reused fd.
 *
 * Usage: floor --listen HOST:PORT --headers FILE
 *   FILE holds the identity header lines ("Name: value", LF or CRLF); empty lines are skipped.
 * Runs until SIGTERM/SIGINT, then prints name=value lines (connections, requests) and exits 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define RING_ENTRIES 1024
#define NBUF 1024 /* provided receive buffers (a power of two) */
#define BUFSZ 4096
#define BGID 0
#define BLOCK 64               /* answers per send at most */
#define PART_CAP (16u << 10)   /* longest request carried over between receives */
#define MAX_HEADERS (8u << 10) /* identity header bytes */

enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND };
#define UD(op, fd) (((uint64_t)(op) << 32) | (uint32_t)(fd))
#define UD_OP(u) ((int)((u) >> 32))
#define UD_FD(u) ((int)(uint32_t)(u))

struct conn {
    bool open;
    bool recv_armed; /* a multishot receive is in flight */
    bool sending;    /* a send is in flight */
    bool close_owed; /* a request asked for Connection: close: answer it last, then shut */
    bool final_sent; /* the Connection: close answer is out */
    bool dead;       /* peer gone or error: close once nothing is in flight */
    uint32_t owed;   /* keep-alive answers not yet handed to a send */
    const char *out; /* the rest of the send in flight */
    uint32_t out_len;
    char *part; /* an incomplete request carried over (malloc'd, PART_CAP) */
    uint32_t part_len;
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static unsigned bufs_returned;
static struct conn *conns;
static int max_fd;
static int listen_fd;
static char *answer_block; /* BLOCK copies of the keep-alive answer */
static size_t answer_len;
static char *answer_close; /* the answer with Connection: close */
static size_t answer_close_len;
static volatile sig_atomic_t stop;
static unsigned long long n_conns, n_requests;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe; /* never NULL right after a submit of a full ring */
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, listen_fd));
}

static void arm_recv(int fd)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, UD(OP_RECV, fd));
    conns[fd].recv_armed = true;
}

static void submit_send(int fd)
{
    struct conn *c = &conns[fd];
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, fd, c->out, c->out_len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(OP_SEND, fd));
    c->sending = true;
}

/* Closes fd once nothing refers to it any more; until then a shutdown ends the receive. */
static void conn_finish(int fd)
{
    struct conn *c = &conns[fd];
    if (c->sending)
        return;
    if (c->recv_armed) {
        shutdown(fd, SHUT_RDWR); /* the multishot receive completes with 0 */
        return;
    }
    free(c->part);
    memset(c, 0, sizeof(*c));
    close(fd);
}

/* Hands the answers owed to a send: keep-alive ones first (up to BLOCK per send), then the final
 * Connection: close one. */
static void conn_flush(int fd)
{
    struct conn *c = &conns[fd];
    if (c->sending || c->dead)
        return;
    if (c->owed) {
        uint32_t n = c->owed < BLOCK ? c->owed : BLOCK;
        c->owed -= n;
        c->out = answer_block;
        c->out_len = (uint32_t)(n * answer_len);
        submit_send(fd);
    } else if (c->close_owed && !c->final_sent) {
        c->final_sent = true;
        c->out = answer_close;
        c->out_len = (uint32_t)answer_close_len;
        submit_send(fd);
    }
}

/* Does the request head [p, p+n) say "Connection: close"? Looks for the header name in its usual
 * spellings only ("Connection", "connection"): the floor parses no more than that. */
static bool wants_close(const char *p, size_t n)
{
    static const char name[] = "onnection:";
    const char *end = p + n;
    for (const char *q = p; (q = memmem(q, (size_t)(end - q), name, sizeof name - 1)); q++) {
        if (q == p || (q[-1] != 'C' && q[-1] != 'c') || (q - 1 != p && q[-2] != '\n'))
            continue;
        const char *v = q + sizeof name - 1;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        if (end - v >= 5 && strncasecmp(v, "close", 5) == 0)
            return true;
    }
    return false;
}

/* Counts the complete requests in [p, p+n), which begins at the start of a request. Returns the
 * bytes consumed; stops after a Connection: close request (setting close_owed). */
__attribute__((nonnull)) static size_t scan(struct conn *c, const char *p, size_t n)
{
    size_t off = 0;
    while (off < n && !c->close_owed) {
        const char *e = memmem(p + off, n - off, "\r\n\r\n", 4);
        if (!e)
            break;
        size_t len = (size_t)(e + 4 - (p + off));
        if (wants_close(p + off, len))
            c->close_owed = true;
        else
            c->owed++;
        n_requests++;
        off += len;
    }
    return off;
}

/* New bytes [p, p+n) on fd. */
static void conn_data(int fd, const char *p, size_t n)
{
    struct conn *c = &conns[fd];
    if (c->close_owed || c->dead)
        return; /* after Connection: close nothing more is read */
    if (c->part_len == 0) {
        size_t used = scan(c, p, n);
        p += used;
        n -= used;
        if (n == 0 || c->close_owed)
            return;
    }
    /* An incomplete request: carry it over, and scan the whole of it again when more comes (the
     * end of its head may straddle the two receives). Rare enough not to be clever about. */
    if (c->part_len + n > PART_CAP || (!c->part && !(c->part = malloc(PART_CAP)))) {
        c->dead = true;
        return;
    }
    memcpy(c->part + c->part_len, p, n);
    c->part_len += (uint32_t)n;
    if (c->part_len == n)
        return; /* just carried over: scanned already */
    size_t used = scan(c, c->part, c->part_len);
    if (c->close_owed)
        used = c->part_len;
    memmove(c->part, c->part + used, c->part_len - used);
    c->part_len -= (uint32_t)used;
}

static void recycle(unsigned bid)
{
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, (unsigned short)bid,
                          io_uring_buf_ring_mask(NBUF), (int)bufs_returned++);
}

static void on_accept(struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE) && !stop)
        arm_accept();
    int fd = cqe->res;
    if (fd < 0) {
        if (fd != -ECANCELED)
            fprintf(stderr, "floor: accept: %s\n", strerror(-fd));
        return;
    }
    if (fd >= max_fd) {
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(&conns[fd], 0, sizeof conns[fd]);
    conns[fd].open = true;
    n_conns++;
    arm_recv(fd);
}

static void on_recv(int fd, struct io_uring_cqe *cqe)
{
    struct conn *c = &conns[fd];
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        conn_data(fd, bufs + (size_t)bid * BUFSZ, (size_t)cqe->res);
        recycle(bid);
    }
    if (!more) {
        c->recv_armed = false;
        if (cqe->res == -ENOBUFS || (cqe->res > 0 && !c->dead && !c->final_sent))
            arm_recv(fd); /* the kernel ended the multishot receive; the peer is still there */
        else
            c->dead = true;
    }
    if (c->dead || c->final_sent)
        conn_finish(fd);
    else
        conn_flush(fd);
}

static void on_send(int fd, struct io_uring_cqe *cqe)
{
    struct conn *c = &conns[fd];
    c->sending = false;
    if (cqe->res < 0) {
        c->dead = true;
    } else if ((uint32_t)cqe->res < c->out_len) {
        c->out += cqe->res;
        c->out_len -= (uint32_t)cqe->res;
        if (!c->dead) {
            submit_send(fd);
            return;
        }
    }
    if (c->dead || (c->final_sent && !c->owed))
        conn_finish(fd);
    else
        conn_flush(fd);
}

/* Reads the identity headers and builds both answers. Returns 0 or -1 (message printed). */
static int answers_build(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "floor: --headers %s: %s\n", path, strerror(errno));
        return -1;
    }
    static char hdrs[MAX_HEADERS];
    size_t len = 0;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\r\n");
        if (n == 0)
            continue;
        if (len + n + 2 > sizeof hdrs || !memchr(line, ':', n)) {
            fprintf(stderr, "floor: --headers %s: a line is not 'Name: value' or too long\n", path);
            fclose(f);
            return -1;
        }
        memcpy(hdrs + len, line, n);
        memcpy(hdrs + len + n, "\r\n", 2);
        len += n + 2;
    }
    fclose(f);
    char one[MAX_HEADERS + 128];
    int n = snprintf(one, sizeof one, "HTTP/1.1 200 OK\r\n%.*sContent-Length: 0\r\n\r\n", (int)len,
                     hdrs);
    answer_len = (size_t)n;
    answer_block = malloc(answer_len * BLOCK);
    answer_close = malloc(answer_len + 32);
    if (!answer_block || !answer_close) {
        fprintf(stderr, "floor: out of memory\n");
        return -1;
    }
    for (int i = 0; i < BLOCK; i++)
        memcpy(answer_block + (size_t)i * answer_len, one, answer_len);
    answer_close_len = (size_t)snprintf(answer_close, answer_len + 32,
                                        "HTTP/1.1 200 OK\r\n%.*sContent-Length: 0\r\n"
                                        "Connection: close\r\n\r\n",
                                        (int)len, hdrs);
    return 0;
}

static int listen_on(const char *spec)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof host) {
        fprintf(stderr, "floor: --listen %s: want HOST:PORT\n", spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "floor: --listen %s: want IPv4:PORT\n", spec);
        return -1;
    }
    sa.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0) {
        fprintf(stderr, "floor: --listen %s: %s\n", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int ring_setup(void)
{
    struct io_uring_params p = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    };
    int rc = io_uring_queue_init_params(RING_ENTRIES, &ring, &p);
    if (rc < 0) { /* kernels before 6.1 */
        memset(&p, 0, sizeof p);
        rc = io_uring_queue_init_params(RING_ENTRIES, &ring, &p);
    }
    if (rc < 0) {
        fprintf(stderr, "floor: io_uring: %s\n", strerror(-rc));
        return -1;
    }
    bufs = mmap(NULL, (size_t)NBUF * BUFSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                0);
    br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bufs == MAP_FAILED || br == MAP_FAILED) {
        fprintf(stderr, "floor: out of memory for receive buffers\n");
        return -1;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = BGID};
    if ((rc = io_uring_register_buf_ring(&ring, &reg, 0)) < 0) {
        fprintf(stderr, "floor: provided buffers: %s\n", strerror(-rc));
        return -1;
    }
    io_uring_buf_ring_init(br);
    for (unsigned i = 0; i < NBUF; i++)
        recycle(i);
    io_uring_buf_ring_advance(br, (int)bufs_returned);
    bufs_returned = 0;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: floor --listen HOST:PORT --headers FILE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *listen_arg = NULL, *headers = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen_arg = argv[++i];
        else if (strcmp(argv[i], "--headers") == 0 && i + 1 < argc)
            headers = argv[++i];
        else
            usage();
    }
    if (!listen_arg || !headers)
        usage();
    if (answers_build(headers) < 0 || (listen_fd = listen_on(listen_arg)) < 0)
        return 2;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        max_fd = rl.rlim_cur > (1u << 20) ? (1 << 20) : (int)rl.rlim_cur;
    } else {
        max_fd = 1024;
    }
    conns = calloc((size_t)max_fd, sizeof *conns);
    if (!conns) {
        fprintf(stderr, "floor: out of memory for %d connections\n", max_fd);
        return 1;
    }
    if (ring_setup() < 0)
        return 1;

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: the wait returns -EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    arm_accept();
    while (!stop) {
        int rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            fprintf(stderr, "floor: io_uring_submit_and_wait: %s\n", strerror(-rc));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            seen++;
            switch (UD_OP(ud)) {
            case OP_ACCEPT:
                on_accept(cqe);
                break;
            case OP_RECV:
                on_recv(UD_FD(ud), cqe);
                break;
            case OP_SEND:
                on_send(UD_FD(ud), cqe);
                break;
            }
        }
        io_uring_cq_advance(&ring, seen);
        if (bufs_returned) {
            io_uring_buf_ring_advance(br, (int)bufs_returned);
            bufs_returned = 0;
        }
    }
    printf("connections=%llu\nrequests=%llu\n", n_conns, n_requests);
    return 0;
}
