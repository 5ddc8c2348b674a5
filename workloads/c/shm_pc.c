/* shm_pc: the seed's producer-consumer over POSIX shared memory (shm_open + ftruncate + mmap,
 * MADV_NOHUGEPAGE), a single-producer single-consumer ring synchronized by FUTEX_WAIT /
 * FUTEX_WAKE system calls made directly, so each one is counted; with --eventfd by two eventfds
 * made before the fork (write to notify; poll, then read, to wait). After the start gate the
 * parent (producer) creates and maps the object; the child (consumer) opens and maps it by
 * name and unlinks it. Same options, verification and summary line as the Rust shm-futex and
 * shm-eventfd. */
#include "common.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#define HEADER 4096
#define MAGIC 0x6970637472616365ULL
#define WAIT_NS 250000000L

struct header {
    _Atomic uint64_t magic;
    uint64_t slot_size, slots;
    char p0[40];
    _Atomic uint64_t head;
    char p1[56];
    _Atomic uint64_t tail;
    char p2[56];
    _Atomic uint32_t data_seq; /* futex event counts: the consumer waits here, */
    char p3[60];
    _Atomic uint32_t space_seq; /* the producer here */
    char p4[60];
};

static char shm_name[64];

static void on_signal(int sig)
{
    shm_unlink(shm_name);
    _exit(128 + sig);
}

static uint64_t stride_of(uint64_t slot_size) { return (8 + slot_size + 63) / 64 * 64; }

static uint64_t region_bytes(uint64_t slot_size, uint64_t slots)
{
    return HEADER + (slots * stride_of(slot_size) + 4095) / 4096 * 4096;
}

static void *map_fd(int fd, uint64_t len, int populate)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
    if (p == MAP_FAILED) {
        perror("shm_pc: mmap");
        exit(1);
    }
    madvise(p, len, MADV_NOHUGEPAGE);
    return p;
}

/* Is the peer gone? The consumer watches its parent, the producer its child. */
static pid_t peer_child;
static pid_t peer_parent;

static void check_peer(const char *what)
{
    int dead = 0;
    if (peer_child > 0) {
        int st;
        dead = waitpid(peer_child, &st, WNOHANG) == peer_child;
    } else {
        dead = getppid() != peer_parent;
    }
    if (dead) {
        fprintf(stderr, "shm_pc: the %s died; giving up\n", what);
        shm_unlink(shm_name);
        exit(1);
    }
}

static void fwait(struct futex_witness *f, _Atomic uint32_t *word, uint32_t expected, const char *peer)
{
    struct timespec ts = {0, WAIT_NS};
    f->wait_calls++;
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, &ts, NULL, 0);
    if (r == 0) {
        f->wait_woken++;
    } else if (errno == EAGAIN) {
        f->wait_eagain++;
    } else if (errno == ETIMEDOUT) {
        f->wait_timedout++;
        check_peer(peer);
    } else {
        f->wait_eintr++;
    }
}

static void fwake(struct futex_witness *f, _Atomic uint32_t *word)
{
    f->wake_calls++;
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, 1, NULL, NULL, 0);
    if (r > 0)
        f->woken += (uint64_t)r;
}

/* --eventfd: the consumer waits on data_efd, the producer on space_efd. */
static int use_eventfd, data_efd = -1, space_efd = -1;

static int efd_of(struct header *h, _Atomic uint32_t *seq) { return seq == &h->data_seq ? data_efd : space_efd; }

static void ewait(struct eventfd_witness *e, int fd, const char *peer)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    e->polls++;
    int r = poll(&p, 1, (int)(WAIT_NS / 1000000));
    if (r <= 0) {
        if (r == 0) {
            e->polls_timedout++;
            check_peer(peer);
        }
        return;
    }
    e->polls_ready++;
    uint64_t v;
    e->reads++;
    if (read(fd, &v, 8) < 0)
        e->reads_eagain++;
}

static void enotify(struct eventfd_witness *e, int fd)
{
    uint64_t one = 1;
    e->writes++;
    if (write(fd, &one, 8) < 0)
        perror("shm_pc: eventfd write");
}

/* Block until cond. seq is an event count: +2 per notification, low bit = "a waiter may sleep"
 * (set by the waiter with a CAS, cleared by the notifier that wakes it): see the Rust
 * Waiter::wait_until for the argument that no wake-up is lost. */
#define WAIT_UNTIL(cond, seq, peer)                                                                                    \
    for (;;) {                                                                                                         \
        if (cond)                                                                                                      \
            break;                                                                                                     \
        uint32_t v = atomic_load(&(seq));                                                                              \
        if (!(v & 1) && !atomic_compare_exchange_strong(&(seq), &v, v | 1))                                            \
            continue;                                                                                                  \
        if (cond)                                                                                                      \
            break;                                                                                                     \
        if (use_eventfd)                                                                                               \
            ewait(&ef, efd_of(h, &(seq)), peer);                                                                       \
        else                                                                                                           \
            fwait(&fx, &(seq), v | 1, peer);                                                                           \
    }

#define NOTIFY(seq)                                                                                                    \
    do {                                                                                                               \
        if (atomic_fetch_add(&(seq), 2) & 1) {                                                                         \
            atomic_fetch_and(&(seq), ~1u);                                                                             \
            if (use_eventfd)                                                                                           \
                enotify(&ef, efd_of(h, &(seq)));                                                                       \
            else                                                                                                       \
                fwake(&fx, &(seq));                                                                                    \
        }                                                                                                              \
    } while (0)

static int produce(const struct opts *o)
{
    uint64_t slot_size = o->slot_size ? o->slot_size : o->msg_size;
    uint64_t stride = stride_of(slot_size);
    uint64_t slots = o->slots ? o->slots : (4ULL << 20) / stride;
    if (!o->slots && slots < 2)
        slots = 2;
    if (!o->slots && slots > 256)
        slots = 256;
    if (slot_size < o->msg_size) {
        fprintf(stderr, "shm_pc: --slot-size must be at least --msg-size\n");
        return 2;
    }
    uint64_t len = region_bytes(slot_size, slots);
    int fd = shm_open(shm_name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
        perror("shm_pc: shm_open/ftruncate");
        shm_unlink(shm_name);
        return 1;
    }
    uint8_t *base = map_fd(fd, len, o->populate);
    close(fd);
    struct header *h = (struct header *)base;
    h->slot_size = slot_size;
    h->slots = slots;
    atomic_store(&h->magic, MAGIC);

    struct futex_witness fx = {0};
    struct eventfd_witness ef = {0};
    struct witness w = {.transport = use_eventfd ? "shm-eventfd" : "shm-futex", .role = "producer", .verified = -1,
                        .mismatch = -1, .futex = use_eventfd ? NULL : &fx, .eventfd = use_eventfd ? &ef : NULL};
    uint8_t *pat = pattern_buf(o->msg_size);
    uint64_t off = 0, head = 0;
    while (off < o->total) {
        uint64_t n = o->total - off < o->msg_size ? o->total - off : o->msg_size;
        WAIT_UNTIL(head - atomic_load(&h->tail) < slots, h->space_seq, "consumer");
        uint8_t *slot = base + HEADER + (head % slots) * stride;
        *(volatile uint64_t *)slot = n;
        memcpy(slot + 8, pat + off % PERIOD, n);
        if (o->corrupt_at >= 0 && (uint64_t)o->corrupt_at >= off && (uint64_t)o->corrupt_at < off + n)
            slot[8 + (uint64_t)o->corrupt_at - off] ^= 0xff;
        head++;
        atomic_store(&h->head, head);
        NOTIFY(h->data_seq);
        off += n;
        w.messages++;
    }
    w.bytes = off;
    summary(&w);
    return 0;
}

static int consume(const struct opts *o)
{
    int fd = -1;
    struct stat st = {0};
    for (int tries = 0;; tries++) {
        fd = shm_open(shm_name, O_RDWR, 0);
        if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0)
            break;
        if (fd >= 0)
            close(fd);
        check_peer("producer");
        if (tries > 10000) {
            fprintf(stderr, "shm_pc: the producer never created %s\n", shm_name);
            return 1;
        }
        usleep(1000);
    }
    uint8_t *base = map_fd(fd, (uint64_t)st.st_size, o->populate);
    close(fd);
    struct header *h = (struct header *)base;
    while (atomic_load(&h->magic) != MAGIC) {
        check_peer("producer");
        usleep(1000);
    }
    shm_unlink(shm_name); /* both sides have it mapped */
    uint64_t slot_size = h->slot_size, slots = h->slots, stride = stride_of(slot_size);

    struct futex_witness fx = {0};
    struct eventfd_witness ef = {0};
    struct witness w = {.transport = use_eventfd ? "shm-eventfd" : "shm-futex", .role = "consumer", .verified = 0,
                        .mismatch = -1, .futex = use_eventfd ? NULL : &fx, .eventfd = use_eventfd ? &ef : NULL};
    uint8_t *pat = pattern_buf(slot_size);
    uint64_t off = 0, tail = 0;
    while (off < o->total) {
        WAIT_UNTIL(atomic_load(&h->head) > tail, h->data_seq, "producer");
        uint8_t *slot = base + HEADER + (tail % slots) * stride;
        uint64_t n = *(volatile uint64_t *)slot;
        if (n > slot_size) {
            fprintf(stderr, "shm_pc: corrupt ring\n");
            return 1;
        }
        if (w.mismatch < 0)
            w.mismatch = first_mismatch(pat, off, slot + 8, n);
        off += n;
        tail++;
        atomic_store(&h->tail, tail);
        NOTIFY(h->space_seq);
        w.messages++;
    }
    return consumer_done("shm_pc", &w, off, -1);
}

int main(int argc, char **argv)
{
    struct opts o = parse_opts(argc, argv, PROG_SHM);
    pid_t parent = getpid();
    snprintf(shm_name, sizeof shm_name, "/shm_pc-%d", (int)parent);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGHUP, on_signal);
    if (o.eventfd) {
        use_eventfd = 1;
        data_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        space_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (data_efd < 0 || space_efd < 0) {
            perror("shm_pc: eventfd");
            return 1;
        }
    }
    gate_prepare(&o);
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        die_with_parent(parent);
        peer_parent = parent;
        gate_wait(&o, argv[0], 0);
        return consume(&o);
    }
    peer_child = child;
    gate_wait(&o, argv[0], child);
    int rc = produce(&o);
    int st = 0;
    pid_t r = waitpid(child, &st, 0);
    if (r == child && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
        fprintf(stderr, "shm_pc: the consumer failed\n");
        rc = 1;
    }
    shm_unlink(shm_name);
    return rc;
}
