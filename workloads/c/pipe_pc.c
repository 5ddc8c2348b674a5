/* pipe_pc: the seed's producer-consumer over an anonymous pipe (fork + pipe).
 * The parent writes --total bytes of the pattern in --msg-size writes; the child reads until
 * EOF and verifies every byte. Each prints the summary line the Rust workloads print. */
#include "common.h"

#include <sys/wait.h>

static int consume(int fd, const struct opts *o)
{
    uint8_t *pat = pattern_buf(o->msg_size);
    uint8_t *buf = malloc(o->msg_size);
    struct witness w = {.transport = "pipe", .role = "consumer", .verified = 0, .mismatch = -1};
    uint64_t off = 0;
    for (;;) {
        w.calls++;
        ssize_t n = read(fd, buf, o->msg_size);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("pipe_pc consumer: read");
            return 1;
        }
        if (w.mismatch < 0)
            w.mismatch = first_mismatch(pat, off, buf, (uint64_t)n);
        off += (uint64_t)n;
        w.messages++;
    }
    return consumer_done("pipe_pc", &w, off, (int64_t)o->total);
}

static int produce(int fd, const struct opts *o)
{
    uint8_t *pat = pattern_buf(o->msg_size);
    uint8_t *scratch = malloc(o->msg_size);
    struct witness w = {.transport = "pipe", .role = "producer", .verified = -1, .mismatch = -1};
    uint64_t off = 0;
    signal(SIGPIPE, SIG_IGN);
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
            ssize_t n = write(fd, msg + done, len - done);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                fprintf(stderr, "pipe_pc producer: write failed after %llu of %llu bytes: %s\n",
                        (unsigned long long)(off + done), (unsigned long long)o->total, strerror(errno));
                return 1;
            }
            done += (uint64_t)n;
        }
        off += len;
        w.messages++;
    }
    w.bytes = off;
    summary(&w);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = parse_opts(argc, argv, PROG_PIPE);
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        return 1;
    }
    gate_prepare(&o);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        die_with_parent(parent);
        close(p[1]);
        gate_wait(&o, argv[0], 0);
        return consume(p[0], &o);
    }
    close(p[0]);
    gate_wait(&o, argv[0], child);
    int rc = produce(p[1], &o);
    close(p[1]);
    int st = 0;
    if (waitpid(child, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "pipe_pc: the consumer failed\n");
        rc = 1;
    }
    return rc;
}
