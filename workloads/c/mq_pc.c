/* mq_pc: the producer-consumer over a message queue: POSIX (mq_send/mq_receive) by default,
 * SysV (msgsnd/msgrcv) with --sysv. The parent sends --total bytes of the pattern in
 * --msg-size messages; the child receives until a 0-byte message and verifies every byte.
 * Each prints the summary line the Rust workloads print (workload=mq|sysv-msg).
 *
 * The POSIX queue is created with O_EXCL (--mq-name /NAME, or a random name) and its name
 * unlinked at once: nothing is left whatever ends the run. The SysV queue is private and
 * removed by the parent at the end or by a signal handler. A size above the limits
 * (fs.mqueue.msgsize_max unless CAP_SYS_RESOURCE; kernel.msgmax) is refused, exit 2.
 *
 * Test shapes: --priorities N sends message i at priority i % N (SysV: mtype N - prio, read
 * lowest first) with its sequence number in its first 8 bytes, and both sides print their
 * per-priority counts (the consumer also whether priorities arrived in order);
 * --queue-first: the consumer starts receiving only once every message is queued;
 * --handoff: the producer sends each message only once the consumer is blocked in its
 * receive (read from /proc/PID/syscall and /proc/PID/stat). */
#include "common.h"

#include <fcntl.h>
#include <mqueue.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#define MAX_PRIO 32

static struct opts o;
static mqd_t mq = (mqd_t)-1;
static int msqid = -1;
static pid_t child_pid;

static uint64_t read_u64(const char *path, uint64_t dflt)
{
    FILE *f = fopen(path, "r");
    unsigned long long v;
    if (!f)
        return dflt;
    int ok = fscanf(f, "%llu", &v) == 1;
    fclose(f);
    return ok ? (uint64_t)v : dflt;
}

static int has_sys_resource(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long caps = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "CapEff: %llx", &caps) == 1)
            break;
    if (f)
        fclose(f);
    return (caps >> 24) & 1;
}

static void on_signal(int sig)
{
    if (msqid >= 0)
        msgctl(msqid, IPC_RMID, NULL);
    _exit(128 + sig);
}

static void on_child(int sig)
{
    (void)sig;
}

/* Priorities: message i goes at i % N; SysV carries it as mtype N - prio (read lowest first). */
static unsigned prio_of(uint64_t i)
{
    return o.priorities > 1 ? (unsigned)(i % o.priorities) : 0;
}

static uint64_t nprio(void)
{
    return o.priorities > 1 ? o.priorities : 1;
}

static const char *transport(void)
{
    return o.sysv ? "sysv-msg" : "mq";
}

/* One send; 0 or -1 with errno. `buf` has 8 bytes of room before `msg` for the SysV mtype. */
static int send_one(uint8_t *buf, size_t len, unsigned prio)
{
    if (!o.sysv)
        return mq_send(mq, (const char *)buf + 8, len, prio);
    long mtype = (long)(nprio() - prio);
    memcpy(buf, &mtype, sizeof mtype);
    return msgsnd(msqid, buf, len, 0);
}

/* One receive into buf + 8; the length, or -1 with errno. */
static ssize_t recv_one(uint8_t *buf, size_t cap, unsigned *prio)
{
    if (!o.sysv)
        return mq_receive(mq, (char *)buf + 8, cap, prio);
    ssize_t n = msgrcv(msqid, buf, cap, o.priorities > 1 ? -(long)nprio() : 0, 0);
    long mtype;
    memcpy(&mtype, buf, sizeof mtype);
    *prio = (unsigned)(nprio() - (uint64_t)mtype);
    return n;
}

/* Is the consumer blocked in its receive? */
static int consumer_blocked(void)
{
    char path[64], text[256];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)child_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long nr = -1;
    int got = fscanf(f, "%ld", &nr) == 1;
    fclose(f);
    long want = o.sysv ? SYS_msgrcv : SYS_mq_timedreceive;
    if (!got || nr != want)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)child_pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *p = strrchr(text, ')');
    return p && p[1] == ' ' && p[2] == 'S';
}

static void print_prios(const char *role, const uint64_t *count, int in_order)
{
    if (o.priorities <= 1)
        return;
    printf("priorities role=%s", role);
    if (in_order >= 0)
        printf(" in_order=%d", in_order);
    for (uint64_t p = 0; p < nprio(); p++)
        printf(" prio%llu=%llu", (unsigned long long)p, (unsigned long long)count[p]);
    printf("\n");
    fflush(stdout);
}

static int produce(int go_fd)
{
    uint8_t *pat = pattern_buf(o.msg_size);
    uint8_t *buf = malloc(o.msg_size + 8);
    uint64_t count[MAX_PRIO] = {0};
    struct witness w = {.transport = transport(), .role = "producer", .verified = -1, .mismatch = -1};
    uint64_t off = 0;
    while (1) {
        uint64_t len = o.total - off < o.msg_size ? o.total - off : o.msg_size;
        int last = off >= o.total;
        if (last)
            len = 0;
        else
            memcpy(buf + 8, pat + off % PERIOD, len);
        if (!last && o.corrupt_at >= 0 && (uint64_t)o.corrupt_at >= off && (uint64_t)o.corrupt_at < off + len)
            buf[8 + (uint64_t)o.corrupt_at - off] ^= 0xff;
        unsigned prio = last ? 0 : prio_of(w.messages);
        if (!last && o.priorities > 1)
            memcpy(buf + 8, &w.messages, 8);
        while (o.handoff && !consumer_blocked()) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
            if (waitpid(child_pid, NULL, WNOHANG) == child_pid) {
                fprintf(stderr, "mq_pc producer: the consumer exited\n");
                return 1;
            }
        }
        for (;;) {
            w.calls++;
            if (send_one(buf, len, prio) == 0)
                break;
            if (errno == EINTR && waitpid(child_pid, NULL, WNOHANG) != child_pid)
                continue;
            fprintf(stderr, "mq_pc producer: send failed after %llu of %llu bytes: %s\n", (unsigned long long)off,
                    (unsigned long long)o.total, errno == EINTR ? "the consumer exited" : strerror(errno));
            return 1;
        }
        if (last)
            break;
        off += len;
        w.messages++;
        count[prio]++;
    }
    /* Everything queued, the end marker too: the consumer may start (--queue-first). */
    if (go_fd >= 0)
        close(go_fd);
    w.bytes = off;
    summary(&w);
    print_prios("producer", count, -1);
    return 0;
}

static int consume(int go_fd)
{
    uint8_t *pat = pattern_buf(o.msg_size);
    size_t cap = o.msg_size;
    uint8_t *buf = malloc(cap + 8);
    uint64_t count[MAX_PRIO] = {0};
    int in_order = 1;
    unsigned last_prio = ~0u;
    struct witness w = {.transport = transport(), .role = "consumer", .verified = 0, .mismatch = -1};
    uint64_t off = 0;
    if (go_fd >= 0) {
        char c;
        while (read(go_fd, &c, 1) < 0 && errno == EINTR)
            ;
        close(go_fd);
    }
    for (;;) {
        unsigned prio = 0;
        w.calls++;
        ssize_t n = recv_one(buf, cap, &prio);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("mq_pc consumer: receive");
            return 1;
        }
        uint64_t at = off;
        size_t skip = 0;
        if (o.priorities > 1) {
            uint64_t seq;
            memcpy(&seq, buf + 8, 8);
            at = seq * o.msg_size;
            skip = 8;
            if (prio < MAX_PRIO)
                count[prio]++;
            if (prio > last_prio)
                in_order = 0;
            last_prio = prio;
        }
        if (w.mismatch < 0 && (size_t)n > skip)
            w.mismatch = first_mismatch(pat, at + skip, buf + 8 + skip, (uint64_t)n - skip);
        off += (uint64_t)n;
        w.messages++;
    }
    /* Priority order is only promised among messages queued together. */
    print_prios("consumer", count, o.queue_first ? in_order : -1);
    return consumer_done("mq_pc", &w, off, (int64_t)o.total);
}

int main(int argc, char **argv)
{
    o = parse_opts(argc, argv, PROG_MQ);
    uint64_t max_depth = o.sysv ? 1000000 : read_u64("/proc/sys/fs/mqueue/msg_max", 10);
    if (o.depth == 0)
        o.depth = max_depth < 10 ? max_depth : 10;
    if (!o.sysv && o.depth > max_depth && !has_sys_resource()) {
        fprintf(stderr, "mq_pc: --depth %llu is above fs.mqueue.msg_max (%llu)\n", (unsigned long long)o.depth,
                (unsigned long long)max_depth);
        return 2;
    }
    if (o.sysv) {
        uint64_t max = read_u64("/proc/sys/kernel/msgmax", 8192), mnb = read_u64("/proc/sys/kernel/msgmnb", 16384);
        if (o.msg_size > max || o.msg_size > mnb) {
            fprintf(stderr, "mq_pc: --msg-size %llu is above kernel.msgmax (%llu) or kernel.msgmnb (%llu)\n",
                    (unsigned long long)o.msg_size, (unsigned long long)max, (unsigned long long)mnb);
            return 2;
        }
    } else {
        uint64_t max = read_u64("/proc/sys/fs/mqueue/msgsize_max", 8192);
        if (o.msg_size > max && !has_sys_resource()) {
            fprintf(stderr, "mq_pc: --msg-size %llu is above fs.mqueue.msgsize_max (%llu) without CAP_SYS_RESOURCE\n",
                    (unsigned long long)o.msg_size, (unsigned long long)max);
            return 2;
        }
    }
    if (o.priorities > 1 && o.msg_size < 8) {
        fprintf(stderr, "mq_pc: --priorities needs --msg-size of at least 8 (the sequence number)\n");
        return 2;
    }
    uint64_t messages = (o.total + o.msg_size - 1) / o.msg_size + 1;
    uint64_t mnb = read_u64("/proc/sys/kernel/msgmnb", 16384);
    if (o.queue_first && ((!o.sysv && messages > o.depth) || (o.sysv && o.total > mnb))) {
        fprintf(stderr, "mq_pc: --queue-first needs every message queued: %llu messages, depth %llu (SysV: %llu bytes)\n",
                (unsigned long long)messages, (unsigned long long)o.depth, (unsigned long long)mnb);
        return 2;
    }
    if (o.queue_first && o.handoff) {
        fprintf(stderr, "mq_pc: --queue-first and --handoff contradict each other\n");
        return 2;
    }
    char name[256];
    if (o.sysv) {
        msqid = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
        if (msqid < 0) {
            perror("mq_pc: msgget");
            return 1;
        }
    } else {
        if (o.mq_name && (o.mq_name[0] != '/' || strchr(o.mq_name + 1, '/') || !o.mq_name[1])) {
            fprintf(stderr, "mq_pc: --mq-name %s: a POSIX queue name is /NAME with no other /\n", o.mq_name);
            return 2;
        }
        if (o.mq_name)
            snprintf(name, sizeof name, "%s", o.mq_name);
        else
            snprintf(name, sizeof name, "/mq_pc-%d-%ld", (int)getpid(), (long)time(NULL));
        struct mq_attr attr = {.mq_maxmsg = (long)o.depth, .mq_msgsize = (long)o.msg_size};
        mq = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
        if (mq == (mqd_t)-1) {
            fprintf(stderr, "mq_pc: creating the queue %s failed: %s\n", name, strerror(errno));
            return errno == EEXIST ? 2 : 1;
        }
        /* The descriptors keep the queue: no name outlives this instant. */
        mq_unlink(name);
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGHUP, on_signal);
    int go[2] = {-1, -1};
    if (o.queue_first && pipe(go) != 0) {
        perror("pipe");
        return 1;
    }
    gate_prepare(&o);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        on_signal(0);
    }
    if (child == 0) {
        die_with_parent(parent);
        if (go[1] >= 0)
            close(go[1]);
        gate_wait(&o, argv[0], 0);
        return consume(go[0]);
    }
    child_pid = child;
    if (go[0] >= 0)
        close(go[0]);
    struct sigaction sa = {0};
    sa.sa_handler = on_child;
    sigaction(SIGCHLD, &sa, NULL);
    gate_wait(&o, argv[0], child);
    int rc = produce(go[1]);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    if (msqid >= 0)
        msgctl(msqid, IPC_RMID, NULL);
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        rc = 1;
    return rc;
}
