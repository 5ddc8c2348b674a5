/* uds_pc: the producer-consumer over a Unix domain socket (fork + socketpair, or a named
 * socket with --socket-path; @name is the abstract namespace). --type stream|dgram|seqpacket.
 * The parent sends --total bytes of the pattern in --msg-size sends; the child receives until
 * EOF (a 0-byte datagram ends a datagram stream) and verifies every byte. Each prints the
 * summary line the Rust workloads print (workload=unix-stream|unix-dgram|unix-seqpacket). */
#include "common.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static int sock_type(const struct opts *o)
{
    if (!strcmp(o->sock_type, "dgram"))
        return SOCK_DGRAM;
    if (!strcmp(o->sock_type, "seqpacket"))
        return SOCK_SEQPACKET;
    return SOCK_STREAM;
}

static const char *transport(const struct opts *o)
{
    return sock_type(o) == SOCK_DGRAM ? "unix-dgram" : sock_type(o) == SOCK_SEQPACKET ? "unix-seqpacket" : "unix-stream";
}

/* Raise the buffers as far as allowed: a datagram above sk_sndbuf - 32 is refused. */
static void raise_buffers(int s)
{
    int want = 64 << 20;
    if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) != 0)
        setsockopt(s, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
}

static socklen_t address(const char *path, struct sockaddr_un *a)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    int abstract_ns = path[0] == '@';
    const char *name = path + abstract_ns;
    size_t n = strlen(name);
    if (n + abstract_ns >= sizeof a->sun_path) {
        fprintf(stderr, "uds_pc: socket path too long\n");
        exit(2);
    }
    memcpy(a->sun_path + abstract_ns, name, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + abstract_ns + n + !abstract_ns);
}

static void remove_name(const struct opts *o)
{
    if (o->socket_path && o->socket_path[0] != '@')
        unlink(o->socket_path);
}

static int is_message(const struct opts *o)
{
    return sock_type(o) != SOCK_STREAM;
}

static int consume(int s, const struct opts *o)
{
    uint8_t *pat = pattern_buf(o->msg_size);
    uint8_t *buf = malloc(o->msg_size);
    struct witness w = {.transport = transport(o), .role = "consumer", .verified = 0, .mismatch = -1};
    uint64_t off = 0;
    for (;;) {
        w.calls++;
        ssize_t n = recv(s, buf, o->msg_size, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("uds_pc consumer: recv");
            return 1;
        }
        if (w.mismatch < 0)
            w.mismatch = first_mismatch(pat, off, buf, (uint64_t)n);
        off += (uint64_t)n;
        w.messages++;
    }
    return consumer_done("uds_pc", &w, off, (int64_t)o->total);
}

static int produce(int s, const struct opts *o)
{
    uint8_t *pat = pattern_buf(o->msg_size);
    uint8_t *scratch = malloc(o->msg_size);
    struct witness w = {.transport = transport(o), .role = "producer", .verified = -1, .mismatch = -1};
    uint64_t off = 0;
    while (off < o->total) {
        uint64_t len = o->total - off < o->msg_size ? o->total - off : o->msg_size;
        const uint8_t *msg = pat + off % PERIOD;
        if (o->corrupt_at >= 0 && (uint64_t)o->corrupt_at >= off && (uint64_t)o->corrupt_at < off + len) {
            memcpy(scratch, msg, len);
            scratch[(uint64_t)o->corrupt_at - off] ^= 0xff;
            msg = scratch;
        }
        uint64_t done = 0;
        while (done < len) {
            w.calls++;
            ssize_t n = send(s, msg + done, len - done, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                fprintf(stderr, "uds_pc producer: send failed after %llu of %llu bytes: %s\n",
                        (unsigned long long)(off + done), (unsigned long long)o->total, strerror(errno));
                return 1;
            }
            /* A message socket sends the whole message or nothing. */
            done += is_message(o) ? len : (uint64_t)n;
        }
        off += len;
        w.messages++;
    }
    if (sock_type(o) == SOCK_DGRAM) {
        /* The end marker: a closed datagram peer gives no EOF. */
        w.calls++;
        if (send(s, "", 0, MSG_NOSIGNAL) < 0) {
            perror("uds_pc producer: sending the end marker");
            return 1;
        }
    }
    w.bytes = off;
    summary(&w);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = parse_opts(argc, argv, PROG_UDS);
    int ty = sock_type(&o);
    int pair[2] = {-1, -1}, bound = -1;
    struct sockaddr_un addr;
    socklen_t alen = 0;
    if (o.socket_path) {
        alen = address(o.socket_path, &addr);
        bound = socket(AF_UNIX, ty, 0);
        raise_buffers(bound);
        if (bound < 0 || bind(bound, (struct sockaddr *)&addr, alen) != 0) {
            fprintf(stderr, "uds_pc: binding %s failed: %s\n", o.socket_path, strerror(errno));
            return 2;
        }
        if (ty != SOCK_DGRAM && listen(bound, 1) != 0) {
            perror("uds_pc: listen");
            remove_name(&o);
            return 1;
        }
    } else if (socketpair(AF_UNIX, ty, 0, pair) != 0) {
        perror("socketpair");
        return 1;
    } else {
        raise_buffers(pair[0]);
        raise_buffers(pair[1]);
    }
    gate_prepare(&o);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        remove_name(&o);
        return 1;
    }
    if (child == 0) {
        die_with_parent(parent);
        int s = pair[1];
        if (o.socket_path) {
            s = bound;
            gate_wait(&o, argv[0], 0);
            if (ty != SOCK_DGRAM) {
                s = accept(bound, NULL, NULL);
                if (s < 0) {
                    perror("uds_pc consumer: accept");
                    return 1;
                }
            }
        } else {
            close(pair[0]);
            gate_wait(&o, argv[0], 0);
        }
        int rc = consume(s, &o);
        remove_name(&o);
        return rc;
    }
    int s = pair[0];
    if (o.socket_path) {
        close(bound);
        gate_wait(&o, argv[0], child);
        s = socket(AF_UNIX, ty, 0);
        raise_buffers(s);
        /* The consumer's socket is bound before the fork: connecting cannot race it. */
        if (s < 0 || connect(s, (struct sockaddr *)&addr, alen) != 0) {
            fprintf(stderr, "uds_pc producer: connecting to %s failed: %s\n", o.socket_path, strerror(errno));
            kill(child, SIGTERM);
            waitpid(child, NULL, 0);
            remove_name(&o);
            return 1;
        }
    } else {
        close(pair[1]);
        gate_wait(&o, argv[0], child);
    }
    int rc = produce(s, &o);
    close(s);
    int st = 0;
    if (waitpid(child, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "uds_pc: the consumer failed\n");
        rc = 1;
    }
    remove_name(&o);
    return rc;
}
