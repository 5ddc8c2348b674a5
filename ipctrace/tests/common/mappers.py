# A POSIX segment mapped by three processes (kernel_mappers, kernel_diagram): the writer fills
# ROUNDS regions; after each it signals reader 1 (SIGUSR1, taken through a signalfd the reader
# sleeps on in epoll_wait) and writes an eventfd reader 2 sleeps on. Each reader reads the
# region and acknowledges (SIGUSR2 / a second eventfd), so no notification coalesces. Every
# process counts its own notifications, epoll wake-ups and the faults getrusage saw around its
# own touches of the segment, and prints them as one JSON line.
import ctypes, json, mmap, os, resource, select, signal, sys, time
NAME = "/dev/shm/ipctrace-mappers-%d" % os.getpid()
PAGES, ROUNDS, PAGE = 2048, 4, 4096
PER = PAGES // ROUNDS
libc = ctypes.CDLL(None, use_errno=True)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
efd, ack_efd = os.eventfd(0), os.eventfd(0)

SCRATCH = mmap.mmap(-1, PAGE, flags=mmap.MAP_PRIVATE)

def say(d):
    # One write(2) per line: the three processes share stdout.
    os.write(1, (json.dumps(d) + "\n").encode())

def minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def segment():
    while True:
        try:
            fd = os.open(NAME, os.O_RDWR)
            if os.fstat(fd).st_size == PAGES * PAGE:
                break
            os.close(fd)
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    m = mmap.mmap(fd, PAGES * PAGE)
    os.close(fd)
    return m

def touch(m, r, write):
    # The offsets are made before the count starts: the loop itself allocates nothing.
    offs = [i * PAGE for i in range(r * PER, (r + 1) * PER)]
    # The same steps on a private page first: the copy-on-write faults a forked interpreter
    # takes when it first touches its objects (refcounts) fall outside the count.
    for o in offs[:1]:
        SCRATCH[0] = 1
        SCRATCH[0]
    minflt()
    t0 = minflt()
    if write:
        for o in offs:
            m[o] = 1
    else:
        for o in offs:
            m[o]
    return minflt() - t0

def reader(kind):
    m = segment()
    ep = select.epoll()
    if kind == "signalfd":
        mask = (ctypes.c_ulong * 16)()
        libc.sigemptyset(ctypes.byref(mask))
        libc.sigaddset(ctypes.byref(mask), signal.SIGUSR1)
        fd = libc.signalfd(-1, ctypes.byref(mask), os.O_CLOEXEC)
    else:
        fd = efd
    ep.register(fd, select.EPOLLIN)
    faults = wakeups = reads = 0
    for r in range(ROUNDS):
        while not ep.poll():
            pass
        wakeups += 1
        os.read(fd, 128 if kind == "signalfd" else 8)
        reads += 1
        faults += touch(m, r, False)
        if kind == "signalfd":
            os.kill(WRITER, signal.SIGUSR2)
        else:
            os.eventfd_write(ack_efd, 1)
    say({"role": kind, "pid": os.getpid(), "faults": faults, "wakeups": wakeups, "reads": reads})

def writer(r1):
    fd = os.open(NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, PAGES * PAGE)
    m = mmap.mmap(fd, PAGES * PAGE)
    os.close(fd)
    faults = signals = writes = 0
    for r in range(ROUNDS):
        faults += touch(m, r, True)
        os.kill(r1, signal.SIGUSR1)
        signals += 1
        os.eventfd_write(efd, 1)
        writes += 1
        signal.sigwait({signal.SIGUSR2})
        os.eventfd_read(ack_efd)
    os.unlink(NAME)
    say({"role": "writer", "pid": os.getpid(), "faults": faults, "signals": signals, "writes": writes})


rd, wr = os.pipe()
r1 = os.fork()
if r1 == 0:
    os.close(wr)
    WRITER = int(os.read(rd, 16))
    os.close(rd)
    reader("signalfd")
    os._exit(0)
r2 = os.fork()
if r2 == 0:
    os.close(rd); os.close(wr)
    reader("eventfd")
    os._exit(0)
w = os.fork()
if w == 0:
    os.close(rd); os.close(wr)
    writer(r1)
    os._exit(0)
os.close(rd)
os.write(wr, str(w).encode())
os.close(wr)
for p in (r1, r2, w):
    os.waitpid(p, 0)
