/* Shared by pipe_pc.c, shm_pc.c, uds_pc.c and mq_pc.c: options, sizes, the byte pattern, the start
 * gate and the summary line. They mirror the Rust workloads (workloads/src) exactly, so ipctrace's
 * attach tests can use these as foreign programs with the same witnesses. */
#ifndef IPCTRACE_WORKLOADS_COMMON_H
#define IPCTRACE_WORKLOADS_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define PERIOD 251

struct opts {
    uint64_t total;
    uint64_t msg_size;
    uint64_t slot_size; /* shm: 0 = msg_size */
    uint64_t slots;     /* shm: 0 = default */
    int wait_start;
    int populate;
    int64_t corrupt_at; /* -1 = off */
    const char *sock_type;   /* uds: stream (default), dgram, seqpacket */
    const char *socket_path; /* uds: a named socket instead of a socketpair (@name: abstract) */
    int sysv;                /* mq: SysV msgsnd/msgrcv instead of POSIX mq */
    const char *mq_name;     /* mq: the POSIX queue's name (/NAME) */
    uint64_t depth;          /* mq: queue depth, 0 = the limit (at most 10) */
    uint64_t priorities;     /* mq: messages at priorities 0..N-1 (round robin), 0/1 = one */
    int handoff;             /* mq: send only once the consumer is blocked in its receive */
    int queue_first;         /* mq: the consumer receives only after every message was sent */
    int eventfd;             /* shm: synchronize with two eventfds (poll + read / write) */
};

/* Which program parses its options: the extra options each takes. */
enum prog { PROG_PIPE, PROG_SHM, PROG_UDS, PROG_MQ };

static inline uint8_t byte_at(uint64_t i)
{
    uint8_t j = (uint8_t)(i % PERIOD);
    return (uint8_t)((uint8_t)(j * 7 + 13) ^ 0x5a);
}

/* A buffer of len + PERIOD pattern bytes; the window at stream offset off starts at off % PERIOD. */
static uint8_t *pattern_buf(uint64_t len)
{
    uint8_t *b = malloc(len + PERIOD);
    if (!b) {
        perror("malloc");
        exit(1);
    }
    for (uint64_t i = 0; i < len + PERIOD; i++)
        b[i] = byte_at(i);
    return b;
}

/* Offset of the first byte of got[0..n) that differs from the pattern at stream offset off, or -1. */
static int64_t first_mismatch(const uint8_t *pat, uint64_t off, const uint8_t *got, uint64_t n)
{
    const uint8_t *want = pat + off % PERIOD;
    if (memcmp(want, got, n) == 0)
        return -1;
    for (uint64_t i = 0; i < n; i++)
        if (want[i] != got[i])
            return (int64_t)(off + i);
    return -1;
}

/* B, K/KiB, M/MiB, G/GiB (binary); decimal KB/MB/GB refused. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    uint64_t m;
    if (!strcasecmp(end, "") || !strcasecmp(end, "b"))
        m = 1;
    else if (!strcasecmp(end, "k") || !strcasecmp(end, "kib"))
        m = 1ULL << 10;
    else if (!strcasecmp(end, "m") || !strcasecmp(end, "mib"))
        m = 1ULL << 20;
    else if (!strcasecmp(end, "g") || !strcasecmp(end, "gib"))
        m = 1ULL << 30;
    else
        return -1;
    if (n > UINT64_MAX / m)
        return -1;
    *out = n * m;
    return 0;
}

static void usage(const char *prog, enum prog kind)
{
    fprintf(stderr,
            "usage: %s [--total SIZE] [--msg-size SIZE]%s [--wait-start]\n"
            "  sizes: B, K/KiB, M/MiB, G/GiB (K = KiB = 1024)\n"
            "  --wait-start: fork, print the pids, and start when the producer gets SIGUSR1\n",
            prog,
            kind == PROG_SHM   ? " [--slot-size SIZE] [--slots N] [--populate] [--eventfd]"
            : kind == PROG_UDS ? " [--type stream|dgram|seqpacket] [--socket-path PATH|@NAME]"
            : kind == PROG_MQ  ? " [--sysv] [--mq-name /NAME] [--depth N] [--priorities N] [--handoff | --queue-first]"
                               : "");
    exit(2);
}

static struct opts parse_opts(int argc, char **argv, enum prog kind)
{
    int shm = kind == PROG_SHM;
    struct opts o = {.total = 256ULL << 20, .msg_size = kind == PROG_MQ ? 4096 : 64 << 10, .corrupt_at = -1, .sock_type = "stream"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
        char *eq = strchr(a, '=');
        char key[64];
        if (eq && (size_t)(eq - a) < sizeof key) {
            memcpy(key, a, (size_t)(eq - a));
            key[eq - a] = 0;
            a = key;
            v = eq + 1;
        }
#define VALUE() (v ? v : (i + 1 < argc ? argv[++i] : (usage(argv[0], kind), "")))
        if (!strcmp(a, "--total")) {
            if (parse_size(VALUE(), &o.total))
                usage(argv[0], kind);
        } else if (!strcmp(a, "--msg-size")) {
            if (parse_size(VALUE(), &o.msg_size) || o.msg_size == 0)
                usage(argv[0], kind);
        } else if (shm && !strcmp(a, "--slot-size")) {
            if (parse_size(VALUE(), &o.slot_size))
                usage(argv[0], kind);
        } else if (shm && !strcmp(a, "--slots")) {
            if (parse_size(VALUE(), &o.slots) || o.slots == 0)
                usage(argv[0], kind);
        } else if (shm && !strcmp(a, "--populate")) {
            o.populate = 1;
        } else if (shm && !strcmp(a, "--eventfd")) {
            o.eventfd = 1;
        } else if (kind == PROG_UDS && !strcmp(a, "--type")) {
            o.sock_type = VALUE();
            if (strcmp(o.sock_type, "stream") && strcmp(o.sock_type, "dgram") && strcmp(o.sock_type, "seqpacket"))
                usage(argv[0], kind);
        } else if (kind == PROG_UDS && !strcmp(a, "--socket-path")) {
            o.socket_path = VALUE();
        } else if (kind == PROG_MQ && !strcmp(a, "--sysv")) {
            o.sysv = 1;
        } else if (kind == PROG_MQ && !strcmp(a, "--mq-name")) {
            o.mq_name = VALUE();
        } else if (kind == PROG_MQ && !strcmp(a, "--depth")) {
            if (parse_size(VALUE(), &o.depth) || o.depth == 0)
                usage(argv[0], kind);
        } else if (kind == PROG_MQ && !strcmp(a, "--priorities")) {
            if (parse_size(VALUE(), &o.priorities) || o.priorities > 32)
                usage(argv[0], kind);
        } else if (kind == PROG_MQ && !strcmp(a, "--handoff")) {
            o.handoff = 1;
        } else if (kind == PROG_MQ && !strcmp(a, "--queue-first")) {
            o.queue_first = 1;
        } else if (!strcmp(a, "--wait-start")) {
            o.wait_start = 1;
        } else if (!strcmp(a, "--corrupt-at")) {
            o.corrupt_at = strtoll(VALUE(), NULL, 10);
        } else {
            usage(argv[0], kind);
        }
#undef VALUE
    }
    return o;
}

struct futex_witness {
    uint64_t wait_calls, wait_woken, wait_eagain, wait_timedout, wait_eintr, wake_calls, woken;
};

struct eventfd_witness {
    uint64_t writes, reads, reads_eagain, polls, polls_ready, polls_timedout;
};

struct witness {
    const char *transport, *role;
    uint64_t bytes, messages, calls;
    int64_t verified;   /* -1: not a consumer */
    int64_t mismatch;   /* -1: none */
    struct futex_witness *futex;
    struct eventfd_witness *eventfd;
};

/* The same line the Rust workloads print (Witness::summary_line). */
static void summary(const struct witness *w)
{
    char verified[48] = "", fx[160] = "", efd[160] = "", result[48] = "ok";
    if (w->verified >= 0)
        snprintf(verified, sizeof verified, " verified=%lld", (long long)w->verified);
    if (w->futex)
        snprintf(fx, sizeof fx, " futex_wait=%llu woken=%llu eagain=%llu timedout=%llu futex_wake=%llu",
                 (unsigned long long)w->futex->wait_calls, (unsigned long long)w->futex->wait_woken,
                 (unsigned long long)w->futex->wait_eagain, (unsigned long long)w->futex->wait_timedout,
                 (unsigned long long)w->futex->wake_calls);
    if (w->eventfd)
        snprintf(efd, sizeof efd, " eventfd_write=%llu eventfd_read=%llu eagain=%llu poll=%llu ready=%llu timedout=%llu",
                 (unsigned long long)w->eventfd->writes, (unsigned long long)w->eventfd->reads,
                 (unsigned long long)w->eventfd->reads_eagain, (unsigned long long)w->eventfd->polls,
                 (unsigned long long)w->eventfd->polls_ready, (unsigned long long)w->eventfd->polls_timedout);
    if (w->mismatch >= 0)
        snprintf(result, sizeof result, "mismatch@%lld", (long long)w->mismatch);
    printf("workload=%s role=%s pid=%d bytes=%llu messages=%llu calls=%llu%s%s%s result=%s\n", w->transport, w->role,
           (int)getpid(), (unsigned long long)w->bytes, (unsigned long long)w->messages,
           (unsigned long long)w->calls, verified, fx, efd, result);
    fflush(stdout);
}

/* The consumer's end of a run: fill in the witness, print the summary, and fail on a corrupted
 * stream or (when `expect` >= 0) a short one. Returns the exit code. */
static int consumer_done(const char *prog, struct witness *w, uint64_t off, int64_t expect)
{
    w->bytes = off;
    w->verified = w->mismatch >= 0 ? w->mismatch : (int64_t)off;
    summary(w);
    if (w->mismatch >= 0) {
        fprintf(stderr, "%s consumer: data corrupted: byte %lld of the stream differs from the pattern\n", prog,
                (long long)w->mismatch);
        return 1;
    }
    if (expect >= 0 && off != (uint64_t)expect) {
        fprintf(stderr, "%s consumer: the producer went away: received %llu of %lld bytes\n", prog,
                (unsigned long long)off, (long long)expect);
        return 1;
    }
    return 0;
}

/* Start gate: block SIGUSR1 before fork (call gate_prepare), then gate_wait in both
 * processes after it. The producer (parent) gets the signal and passes it to the consumer. */
static sigset_t gate_set;

static void gate_prepare(const struct opts *o)
{
    if (!o->wait_start)
        return;
    sigemptyset(&gate_set);
    sigaddset(&gate_set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &gate_set, NULL);
}

static void gate_wait(const struct opts *o, const char *prog, pid_t child)
{
    if (!o->wait_start)
        return;
    int sig;
    if (child > 0) {
        fprintf(stderr, "%s: ready producer=%d consumer=%d: send SIGUSR1 to the producer to start\n", prog,
                (int)getpid(), (int)child);
        sigwait(&gate_set, &sig);
        kill(child, SIGUSR1);
    } else {
        sigwait(&gate_set, &sig);
    }
}

/* In the child: die with the parent, and notice if it is already gone. */
static void die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(1);
}

#endif
