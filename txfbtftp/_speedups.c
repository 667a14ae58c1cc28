/* The compiled twin of a download's DATA hot path (optional).
 *
 * Rules:
 *
 * 1. Same state whenever Python runs, same steps.  The transfer's state
 *    lives in the very attributes the pure-Python path uses (the
 *    ReadMachine's, its Watchdog's and RTOEstimator's, the FileReader's).
 *    A lane reads them into a copy of its own at its first step in a call
 *    into this module (it is then *hot*), takes its steps on the copy as
 *    ReadSession.receive -> ReadMachine.receive/_ack -> _pump/feed ->
 *    SocketLink.send would, and writes it all back before the call
 *    returns: a parked poller serves a WAN download's blocks without
 *    touching a Python object, and Python never sees a copy, so either
 *    path may take any datagram.  Each call writes back the lanes it made
 *    hot, and no garbage collection runs during one (a finalizer would
 *    see a copy).  Nothing but the reactor's thread may look at a session
 *    meanwhile (as everywhere in Twisted).  A copy that cannot be written
 *    back whole leaves a transfer Python cannot trust: its session ends.
 * 2. Only the common step.  An ACK from the session's client that
 *    acknowledges the whole window of a transfer under way, with no backend
 *    call pending and no budget gate, is served here.  Anything else (a
 *    stranger, a duplicate or partial ACK, an ERROR, the last ACK, a read
 *    error) goes back to Python, untouched.
 * 3. Nothing changes until everything is known.  The blocks are read
 *    before the first attribute is written; a failure before that point is
 *    a hand-back, never a half step.
 * 4. No Python is called but the session's clock (time.time is read in
 *    C), and that before a step begins.  What Python must do (a
 *    datagram to hand back, a deadline to keep, a failure to log) is
 *    returned as (call, a, b) for the poller to run under its own error
 *    handling.
 * 5. The poller keeps its lanes' deadlines (``Deadlines``), not the
 *    reactor: a lane moves its session's deadline at every ACK, and a timer
 *    set for the old one would wake the process for nothing about once per
 *    round trip.  The lane moves its own entry; ``Deadlines.due`` and
 *    ``park`` tell the sessions whose deadline has come.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define MAX_DATAGRAM 65536
#define MAX_SEGMENTS 64
#define MAX_GSO_BYTES 65000
#define MAX_WINDOW 256
#define BATCH 64

static PyTypeObject LaneType;

/* Attribute names, interned once. */
static PyObject *s_machine_state, *s_acked, *s_sent, *s_last, *s_window, *s_clean, *s_burst_at,
    *s_restart_armed, *s_deadline, *s_established, *s_bytes, *s_bytes_sent, *s_packets_sent,
    *s_packets_received, *s_last_heard_at, *s_first_reply_at, *s_oack, *s_pending, *s_gate, *s_wait,
    *s_tries, *s_since, *s_srtt, *s_rttvar, *s_rto, *s_floor, *s_buf, *s_pos, *s_offset, *s_readers, *s_offload, *s_after, *s_deadline_came;

static PyTypeObject DeadlinesType;
typedef struct Lane Lane;

/* The deadlines of a poller's lanes: a binary min-heap on Lane.due, each
 * entry a reference to its lane, which knows its place (Lane.slot). */
typedef struct {
    PyObject_HEAD
    Lane **heap;
    Py_ssize_t n, cap;
} Deadlines;

/* The reader's FileReader state, as the lane keeps it. */
typedef struct {
    PyObject *buf; /* new reference */
    Py_ssize_t pos;
    long long offset;
} ReaderState;

/* A lane's copy of its transfer's state (rule 1), while it is hot. */
typedef struct {
    long acked, sent, last; /* last: -1 for None */
    long packets_received, bytes, bytes_sent, packets_sent;
    double burst_at, deadline, last_heard_at, first_reply_at, since;
    double srtt, rttvar, rto, floor;
    int burst_none, deadline_none, heard, first_new, oack, clean, srtt_none;
    int stepped, sampled; /* a step was served; the estimator took a sample */
    Py_ssize_t wlen;      /* packets in the window (Lane.win) */
    ReaderState rs;
} Hot;

struct Lane {
    PyObject_HEAD
    int fd;                       /* the session socket */
    int file;                     /* the file's shared descriptor */
    struct sockaddr_storage dest; /* the client */
    socklen_t dest_len;
    Py_ssize_t blksize, windowsize, read_ahead, budget, reader_window;
    double longest, first_wait;
    PyObject *session, *sdict;     /* the ReadSession and its __dict__ */
    PyObject *machine, *mdict;     /* its ReadMachine and its __dict__ */
    PyObject *watchdog, *estimator; /* estimator may be Py_None */
    PyObject *reader, *fs, *sender;
    PyObject *seconds;            /* the session's clock */
    PyObject *handler;            /* the pure-Python receiver: handler(data, addr) */
    PyObject *transfer;           /* State.TRANSFER */
    Deadlines *deadlines;         /* where the poller keeps this lane's deadline */
    Py_ssize_t slot;              /* its place there, -1 when it has none */
    double due;                   /* the deadline it is kept at */
    int hot;                      /* h and win hold the transfer's state (rule 1) */
    Lane **hot_list;              /* then: the list of the call that made it hot */
    Lane *hot_next;               /* and the next lane on it */
    Hot h;
    PyObject **win;               /* the window's packets while hot: windowsize slots */
};

/* time.time, the reactor's clock: read here without calling it. */
static PyObject *time_time;

/* The sessions' clock ``seconds``, read once. */
static int
lane_clock(PyObject *seconds, double *now)
{
    PyObject *v;
    if (seconds == time_time) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);  /* what time.time() reads */
        *now = (double)(ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9;
        return 0;
    }
    v = PyObject_CallNoArgs(seconds);
    if (v == NULL)
        return -1;
    *now = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* What one call into this module (serve, park, Lane.drain) carries down
 * to its lanes. */
typedef struct {
    PyObject *later;    /* the (call, a, b) Python must run */
    PyObject *failed;   /* failed(exception, session): a lane's failure */
    unsigned char *buf; /* room for one datagram */
    Lane *hot;          /* the lanes this call made hot (rule 1) */
    int gc;             /* the collector was on: on again at the end */
} Call;

static void lane_unload(Lane *L);

static int
Lane_traverse(Lane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session); Py_VISIT(self->sdict); Py_VISIT(self->machine); Py_VISIT(self->mdict);
    Py_VISIT(self->watchdog); Py_VISIT(self->estimator); Py_VISIT(self->reader); Py_VISIT(self->fs);
    Py_VISIT(self->sender); Py_VISIT(self->seconds); Py_VISIT(self->handler); Py_VISIT(self->transfer);
    Py_VISIT(self->deadlines);
    if (self->hot) {
        Py_ssize_t i;
        for (i = 0; i < self->h.wlen; i++)
            Py_VISIT(self->win[i]);
        Py_VISIT(self->h.rs.buf);
    }
    return 0;
}

static int
Lane_clear(Lane *self)
{
    if (self->hot)
        lane_unload(self);
    Py_CLEAR(self->session); Py_CLEAR(self->sdict); Py_CLEAR(self->machine); Py_CLEAR(self->mdict);
    Py_CLEAR(self->watchdog); Py_CLEAR(self->estimator); Py_CLEAR(self->reader); Py_CLEAR(self->fs);
    Py_CLEAR(self->sender); Py_CLEAR(self->seconds); Py_CLEAR(self->handler); Py_CLEAR(self->transfer);
    Py_CLEAR(self->deadlines);
    return 0;
}

static void
Lane_dealloc(Lane *self)
{
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    PyMem_Free(self->win);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
get_ssize(PyObject *obj, const char *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
get_double(PyObject *obj, const char *name, double *out)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL)
        return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* Lane(session, machine, reader, sock_fd, dest, handler, sender, transfer, deadlines) */
static int
Lane_init(Lane *self, PyObject *args, PyObject *kwds)
{
    PyObject *session, *machine, *reader, *dest, *handler, *sender, *transfer, *host, *sched;
    Deadlines *deadlines;
    int fd, port;
    unsigned int flow = 0, scope = 0;
    const char *addr;
    if (!PyArg_ParseTuple(args, "OOOiOOOOO!", &session, &machine, &reader, &fd, &dest, &handler, &sender,
                          &transfer, &DeadlinesType, &deadlines))
        return -1;
    if (!PyTuple_Check(dest) || !PyArg_ParseTuple(dest, "si|II", &addr, &port, &flow, &scope))
        return -1;
    if (self->session != NULL) {
        PyErr_SetString(PyExc_TypeError, "a lane is made once");
        return -1;
    }
    memset(&self->dest, 0, sizeof self->dest);
    if (strchr(addr, ':') == NULL) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&self->dest;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1) {
            PyErr_SetString(PyExc_ValueError, "not an IPv4 address");
            return -1;
        }
        self->dest_len = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&self->dest;
        char plain[INET6_ADDRSTRLEN];
        const char *pct = strchr(addr, '%');
        size_t len = pct ? (size_t)(pct - addr) : strlen(addr);
        if (len >= sizeof plain) {
            PyErr_SetString(PyExc_ValueError, "not an IPv6 address");
            return -1;
        }
        memcpy(plain, addr, len);
        plain[len] = 0;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        sin6->sin6_flowinfo = htonl(flow);
        sin6->sin6_scope_id = scope;
        if (inet_pton(AF_INET6, plain, &sin6->sin6_addr) != 1) {
            PyErr_SetString(PyExc_ValueError, "not an IPv6 address");
            return -1;
        }
        self->dest_len = sizeof *sin6;
    }
    self->fd = fd;
    if (get_ssize(machine, "blksize", &self->blksize) || get_ssize(machine, "windowsize", &self->windowsize)
        || get_ssize(reader, "READ_AHEAD", &self->read_ahead) || get_ssize(reader, "BUDGET", &self->budget)
        || get_ssize(reader, "window", &self->reader_window))
        return -1;
    {
        Py_ssize_t file;
        if (get_ssize(reader, "_fd", &file))
            return -1;
        self->file = (int)file;
    }
    if (self->windowsize < 1 || self->windowsize > MAX_WINDOW || self->blksize < 8 || self->blksize > 65464) {
        PyErr_SetString(PyExc_ValueError, "window or block size out of range");
        return -1;
    }
    PyMem_Free(self->win);  /* a failed __init__ before may have left one */
    self->win = PyMem_Calloc(self->windowsize, sizeof *self->win);
    if (self->win == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->watchdog = PyObject_GetAttrString(machine, "watchdog");
    if (self->watchdog == NULL)
        return -1;
    self->estimator = PyObject_GetAttrString(self->watchdog, "estimator");
    if (self->estimator == NULL)
        return -1;
    sched = PyObject_GetAttrString(self->watchdog, "schedule");
    if (sched == NULL)
        return -1;
    {
        PyObject *waits = PyObject_GetAttrString(sched, "waits");
        int bad = waits == NULL || get_double(sched, "longest", &self->longest);
        if (!bad) {
            PyObject *first = PySequence_GetItem(waits, 0);
            bad = first == NULL;
            if (!bad) {
                self->first_wait = PyFloat_AsDouble(first);
                bad = PyErr_Occurred() != NULL;
                Py_DECREF(first);
            }
        }
        Py_XDECREF(waits);
        Py_DECREF(sched);
        if (bad)
            return -1;
    }
    self->fs = PyObject_GetAttrString(reader, "_fs");
    if (self->fs == NULL)
        return -1;
    host = PyObject_GetAttrString(session, "_seconds");
    if (host == NULL)
        return -1;
    self->seconds = host;
    self->sdict = PyObject_GenericGetDict(session, NULL);
    self->mdict = PyObject_GenericGetDict(machine, NULL);
    if (self->sdict == NULL || self->mdict == NULL)
        return -1;
    Py_INCREF(session); self->session = session;
    Py_INCREF(machine); self->machine = machine;
    Py_INCREF(reader); self->reader = reader;
    Py_INCREF(handler); self->handler = handler;
    Py_INCREF(sender); self->sender = sender;
    Py_INCREF(transfer); self->transfer = transfer;
    Py_INCREF(deadlines); self->deadlines = deadlines;
    self->slot = -1;
    return 0;
}

/* --- the deadlines heap ------------------------------------------------------------- */

static void
heap_put(Deadlines *D, Py_ssize_t i, Lane *L)
{
    D->heap[i] = L;
    L->slot = i;
}

static void
sift_up(Deadlines *D, Py_ssize_t i)
{
    Lane *L = D->heap[i];
    while (i > 0) {
        Py_ssize_t up = (i - 1) / 2;
        if (D->heap[up]->due <= L->due)
            break;
        heap_put(D, i, D->heap[up]);
        i = up;
    }
    heap_put(D, i, L);
}

static void
sift_down(Deadlines *D, Py_ssize_t i)
{
    Lane *L = D->heap[i];
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= D->n)
            break;
        if (c + 1 < D->n && D->heap[c + 1]->due < D->heap[c]->due)
            c++;
        if (L->due <= D->heap[c]->due)
            break;
        heap_put(D, i, D->heap[c]);
        i = c;
    }
    heap_put(D, i, L);
}

/* Keep L's deadline at ``at``.  Moving one already kept cannot fail; a new
 * one may need room: -1 with MemoryError set. */
static int
deadlines_set(Deadlines *D, Lane *L, double at)
{
    if (L->slot >= 0) {
        double was = L->due;
        L->due = at;
        if (at < was)
            sift_up(D, L->slot);
        else
            sift_down(D, L->slot);
        return 0;
    }
    if (D->n == D->cap) {
        Py_ssize_t cap = D->cap ? 2 * D->cap : 16;
        Lane **heap = PyMem_Realloc(D->heap, cap * sizeof *heap);
        if (heap == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        D->heap = heap;
        D->cap = cap;
    }
    Py_INCREF(L);
    L->due = at;
    heap_put(D, D->n++, L);
    sift_up(D, L->slot);
    return 0;
}

static void
deadlines_remove(Deadlines *D, Lane *L)
{
    Py_ssize_t i = L->slot;
    if (i < 0 || i >= D->n || D->heap[i] != L)
        return;
    L->slot = -1;
    if (i != --D->n) {
        Lane *last = D->heap[D->n];
        heap_put(D, i, last);
        sift_up(D, i);
        if (last->slot == i)
            sift_down(D, i);
    }
    Py_DECREF(L);
}

/* The earliest deadline kept, HUGE_VAL when none. */
static double
deadlines_next(Deadlines *D)
{
    return D->n ? D->heap[0]->due : HUGE_VAL;
}

/* --- reading attributes without a reference; NULL means "not as expected" --- */

static PyObject *
dget(PyObject *dict, PyObject *name)
{
    return PyDict_GetItemWithError(dict, name); /* borrowed */
}

static int
dget_long(PyObject *dict, PyObject *name, long *out)
{
    PyObject *v = PyDict_GetItemWithError(dict, name);
    if (v == NULL || !PyLong_CheckExact(v))
        return -1;
    *out = PyLong_AsLong(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* --- writing attributes: each takes a new value (NULL: its allocation failed) --- */

static int
dset_new(PyObject *dict, PyObject *name, PyObject *v)
{
    int r = v == NULL ? -1 : PyDict_SetItem(dict, name, v);
    Py_XDECREF(v);
    return r;
}

static int
aset_new(PyObject *obj, PyObject *name, PyObject *v)
{
    int r = v == NULL ? -1 : PyObject_SetAttr(obj, name, v);
    Py_XDECREF(v);
    return r;
}

static int
dset_long(PyObject *dict, PyObject *name, long value)
{
    return dset_new(dict, name, PyLong_FromLong(value));
}

static int
dset_double(PyObject *dict, PyObject *name, double value)
{
    return dset_new(dict, name, PyFloat_FromDouble(value));
}

static int
aget_double(PyObject *obj, PyObject *name, double *out, int *is_none)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *is_none = v == Py_None;
    *out = *is_none ? 0.0 : PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (!*is_none && *out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int
aset_double(PyObject *obj, PyObject *name, double value)
{
    return aset_new(obj, name, PyFloat_FromDouble(value));
}

/* --- the reader: FileReader.read, on local copies (rule 3) --- */

/* The next block of at most n bytes, as a DATA packet (4 header bytes left
 * for the caller), or NULL with errno set (or a Python error). */
static PyObject *
read_packet(Lane *L, ReaderState *r, Py_ssize_t n)
{
    Py_ssize_t len = PyBytes_GET_SIZE(r->buf), pos = r->pos, end = pos + n;
    PyObject *pkt;
    if (end <= len) {
        pkt = PyBytes_FromStringAndSize(NULL, n + 4);
        if (pkt == NULL)
            return NULL;
        memcpy(PyBytes_AS_STRING(pkt) + 4, PyBytes_AS_STRING(r->buf) + pos, n);
        if (end == len) {
            Py_SETREF(r->buf, PyBytes_FromStringAndSize(NULL, 0));
            r->pos = 0;
            if (r->buf == NULL) {
                Py_DECREF(pkt);
                return NULL;
            }
        } else {
            r->pos = end;
        }
        return pkt;
    }
    {
        Py_ssize_t rest = len - pos, ahead = L->reader_window, got;
        PyObject *chunk;
        if (ahead == 1) {
            long readers;
            PyObject *v = PyObject_GetAttr(L->fs, s_readers);
            if (v == NULL)
                return NULL;
            readers = PyLong_AsLong(v);
            Py_DECREF(v);
            if (readers == -1 && PyErr_Occurred())
                return NULL;
            if (readers < 1)
                readers = 1;
            ahead = L->budget / (readers * n);
            if (ahead > L->read_ahead)
                ahead = L->read_ahead;
            if (ahead < 1)
                ahead = 1;
        }
        chunk = PyBytes_FromStringAndSize(NULL, rest + n * ahead);
        if (chunk == NULL)
            return NULL;
        memcpy(PyBytes_AS_STRING(chunk), PyBytes_AS_STRING(r->buf) + pos, rest);
        got = pread(L->file, PyBytes_AS_STRING(chunk) + rest, n * ahead, r->offset);
        if (got < 0) {
            Py_DECREF(chunk);
            return NULL; /* errno says why */
        }
        r->offset += got;
        if (rest + got <= n) {
            pkt = PyBytes_FromStringAndSize(NULL, rest + got + 4);
            if (pkt != NULL)
                memcpy(PyBytes_AS_STRING(pkt) + 4, PyBytes_AS_STRING(chunk), rest + got);
            Py_DECREF(chunk);
            Py_SETREF(r->buf, PyBytes_FromStringAndSize(NULL, 0));
            r->pos = 0;
            if (r->buf == NULL)
                Py_CLEAR(pkt);
            return pkt;
        }
        if (_PyBytes_Resize(&chunk, rest + got) < 0)
            return NULL;
        pkt = PyBytes_FromStringAndSize(NULL, n + 4);
        if (pkt == NULL) {
            Py_DECREF(chunk);
            return NULL;
        }
        memcpy(PyBytes_AS_STRING(pkt) + 4, PyBytes_AS_STRING(chunk), n);
        Py_SETREF(r->buf, chunk);
        r->pos = n;
        return pkt;
    }
}

/* --- sending: BatchSender.send --- */

static int
send_one(Lane *L, PyObject *pkt)
{
    /* best effort: a full buffer is a lost packet, which the watchdog resends */
    (void)sendto(L->fd, PyBytes_AS_STRING(pkt), PyBytes_GET_SIZE(pkt), 0, (struct sockaddr *)&L->dest,
                 L->dest_len);
    return 0;
}

static int
send_window(Lane *L, PyObject **pkts, Py_ssize_t n)
{
    int offload;
    Py_ssize_t i = 0;
    PyObject *v = PyObject_GetAttr(L->sender, s_offload);
    if (v == NULL)
        return -1;
    offload = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (offload < 0)
        return -1;
    while (i < n) {
        Py_ssize_t size = PyBytes_GET_SIZE(pkts[i]), j = i + 1;
        if (offload) {
            Py_ssize_t most = n, bound = i + MAX_SEGMENTS, fit = MAX_GSO_BYTES / size;
            if (bound < most)
                most = bound;
            if (fit < 1)
                fit = 1;
            if (i + fit < most)
                most = i + fit;
            while (j < most && PyBytes_GET_SIZE(pkts[j]) == size)
                j++;
            if (j < most && PyBytes_GET_SIZE(pkts[j]) < size)
                j++;
        }
        if (j - i == 1) {
            send_one(L, pkts[i]);
        } else {
            struct iovec iov[MAX_SEGMENTS];
            char control[CMSG_SPACE(sizeof(uint16_t))];
            struct msghdr msg;
            struct cmsghdr *cm;
            uint16_t seg = (uint16_t)size;
            Py_ssize_t k;
            for (k = i; k < j; k++) {
                iov[k - i].iov_base = PyBytes_AS_STRING(pkts[k]);
                iov[k - i].iov_len = PyBytes_GET_SIZE(pkts[k]);
            }
            memset(&msg, 0, sizeof msg);
            memset(control, 0, sizeof control);
            msg.msg_name = &L->dest;
            msg.msg_namelen = L->dest_len;
            msg.msg_iov = iov;
            msg.msg_iovlen = j - i;
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_UDP;
            cm->cmsg_type = UDP_SEGMENT;
            cm->cmsg_len = CMSG_LEN(sizeof seg);
            memcpy(CMSG_DATA(cm), &seg, sizeof seg);
            if (sendmsg(L->fd, &msg, 0) < 0 && (errno == EINVAL || errno == ENOPROTOOPT || errno == EIO
                                                || errno == EOPNOTSUPP)) {
                offload = 0;
                if (PyObject_SetAttr(L->sender, s_offload, Py_False) < 0)
                    return -1;
                continue;
            }
        }
        i = j;
    }
    return 0;
}

/* --- one datagram --- */

static PyObject *
make_addr(struct sockaddr_storage *ss)
{
    char host[NI_MAXHOST];
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, ntohs(sin->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        int err = getnameinfo((struct sockaddr *)ss, sizeof *sin6, host, sizeof host, NULL, 0, NI_NUMERICHOST);
        if (err) {
            PyErr_SetString(PyExc_OSError, gai_strerror(err));
            return NULL;
        }
        return Py_BuildValue("(siII)", host, ntohs(sin6->sin6_port), ntohl(sin6->sin6_flowinfo),
                             sin6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static int
from_client(Lane *L, struct sockaddr_storage *src)
{
    if (src->ss_family != L->dest.ss_family)
        return 0;
    if (src->ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)src, *b = (struct sockaddr_in *)&L->dest;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)src, *b = (struct sockaddr_in6 *)&L->dest;
        return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id
               && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
    }
}

/* --- the hot state (rule 1) --- */

/* Read the transfer's state into L->h, if the lane may take its ACKs: the
 * session has no backend call pending and no gate, the machine is under
 * way with its last block still to read.  1 when L is hot, 0 when not
 * (nothing changed, no error set). */
static int
lane_load(Lane *L, Call *c)
{
    PyObject *sd = L->sdict, *md = L->mdict, *v, *window;
    Hot *h = &L->h;
    Py_ssize_t i;
    h->rs.buf = NULL;
    v = dget(sd, s_wait);
    if (v == NULL)
        goto no;
    v = PyObject_GetAttr(v, s_pending);
    if (v == NULL)
        goto no;
    Py_DECREF(v);
    if (v != Py_None || dget(sd, s_gate) != Py_None || dget(md, s_machine_state) != L->transfer
        || dget(md, s_last) != Py_None)
        goto no;
    if (dget_long(md, s_acked, &h->acked) || dget_long(md, s_sent, &h->sent)
        || dget_long(md, s_packets_received, &h->packets_received) || dget_long(md, s_bytes, &h->bytes)
        || dget_long(md, s_bytes_sent, &h->bytes_sent) || dget_long(md, s_packets_sent, &h->packets_sent))
        goto no;
    window = dget(md, s_window);
    if (window == NULL || !PyList_CheckExact(window) || PyList_GET_SIZE(window) != h->sent - h->acked
        || PyList_GET_SIZE(window) > L->windowsize)
        goto no;
    if ((v = dget(md, s_clean)) == NULL)
        goto no;
    h->clean = v == Py_True;
    if ((v = dget(md, s_oack)) == NULL)
        goto no;
    h->oack = v != Py_None;
    if ((v = dget(md, s_first_reply_at)) == NULL)
        goto no;
    h->heard = v != Py_None;
    v = dget(md, s_burst_at);
    h->burst_none = v == NULL || !PyFloat_CheckExact(v);
    h->burst_at = h->burst_none ? 0.0 : PyFloat_AS_DOUBLE(v);
    v = dget(md, s_deadline);
    h->deadline_none = v == NULL || !PyFloat_CheckExact(v);
    h->deadline = h->deadline_none ? 0.0 : PyFloat_AS_DOUBLE(v);
    h->srtt_none = 1;
    h->srtt = h->rttvar = h->rto = h->floor = 0.0;
    if (L->estimator != Py_None) {
        int none;
        if (aget_double(L->estimator, s_srtt, &h->srtt, &h->srtt_none)
            || aget_double(L->estimator, s_rttvar, &h->rttvar, &none)
            || aget_double(L->estimator, s_rto, &h->rto, &none)
            || aget_double(L->estimator, s_floor, &h->floor, &none))
            goto no;
    }
    {
        PyObject *b = PyObject_GetAttr(L->reader, s_buf), *p, *o;
        if (b == NULL)
            goto no;
        h->rs.buf = b;
        if (!PyBytes_CheckExact(b))
            goto no;
        h->rs.pos = h->rs.offset = -1;
        if ((p = PyObject_GetAttr(L->reader, s_pos)) != NULL) {
            h->rs.pos = PyLong_AsSsize_t(p);
            Py_DECREF(p);
            if ((o = PyObject_GetAttr(L->reader, s_offset)) != NULL) {
                h->rs.offset = PyLong_AsLongLong(o);
                Py_DECREF(o);
            }
        }
        if (h->rs.pos < 0 || h->rs.pos > PyBytes_GET_SIZE(b) || h->rs.offset < 0)
            goto no;
    }
    h->wlen = PyList_GET_SIZE(window);
    for (i = 0; i < h->wlen; i++) {
        L->win[i] = PyList_GET_ITEM(window, i);
        Py_INCREF(L->win[i]);
    }
    h->last = -1;
    h->stepped = h->sampled = h->first_new = 0;
    L->hot = 1;
    L->hot_list = &c->hot;
    L->hot_next = c->hot;
    c->hot = L;
    return 1;
no:
    PyErr_Clear();
    Py_CLEAR(h->rs.buf);
    return 0;
}

/* Let go of L's copy, and of its place among the hot lanes. */
static void
lane_unload(Lane *L)
{
    Lane **p = L->hot_list;
    Py_ssize_t i;
    for (i = 0; i < L->h.wlen; i++)
        Py_CLEAR(L->win[i]);
    L->h.wlen = 0;
    Py_CLEAR(L->h.rs.buf);
    L->hot = 0;
    while (p != NULL && *p != NULL && *p != L)
        p = &(*p)->hot_next;
    if (p != NULL && *p == L)
        *p = L->hot_next;
    L->hot_list = NULL;
    L->hot_next = NULL;
}

/* Write L's copy back to the attributes it came from, in the order of
 * rule 1's steps.  0, or -1 with a Python error (some written, some not:
 * as a Python step that raised half-way). */
static int
lane_flush(Lane *L)
{
    PyObject *md = L->mdict, *window;
    Hot *h = &L->h;
    Py_ssize_t i;
    if (!h->stepped)
        return 0;
    if (dset_long(md, s_packets_received, h->packets_received) || dset_double(md, s_last_heard_at, h->last_heard_at)
        || (h->first_new && dset_double(md, s_first_reply_at, h->first_reply_at))
        || PyDict_SetItem(md, s_established, Py_True))
        return -1;
    if (h->sampled && (aset_double(L->estimator, s_srtt, h->srtt) || aset_double(L->estimator, s_rttvar, h->rttvar)
                       || aset_double(L->estimator, s_rto, h->rto)))
        return -1;
    window = dget(md, s_window);
    if (window == NULL || !PyList_Check(window)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "the machine's window is not a list");
        return -1;
    }
    if (PyList_SetSlice(window, 0, PyList_GET_SIZE(window), NULL))
        return -1;
    for (i = 0; i < h->wlen; i++)
        if (PyList_Append(window, L->win[i]))
            return -1;
    if (dset_long(md, s_acked, h->acked) || dset_double(md, s_burst_at, h->burst_at)
        || PyDict_SetItem(md, s_clean, h->clean ? Py_True : Py_False))
        return -1;
    if (aset_new(L->watchdog, s_tries, PyLong_FromLong(0)) || aset_double(L->watchdog, s_since, h->since)
        || dset_long(md, s_sent, h->sent) || dset_long(md, s_bytes, h->bytes)
        || dset_long(md, s_bytes_sent, h->bytes_sent) || dset_long(md, s_packets_sent, h->packets_sent)
        || PyDict_SetItem(md, s_restart_armed, Py_True) || (h->last >= 0 && dset_long(md, s_last, h->last))
        || dset_double(md, s_deadline, h->deadline))
        return -1;
    if (PyObject_SetAttr(L->reader, s_buf, h->rs.buf) || aset_new(L->reader, s_pos, PyLong_FromSsize_t(h->rs.pos))
        || aset_new(L->reader, s_offset, PyLong_FromLongLong(h->rs.offset)))
        return -1;
    return 0;
}

/* Python's error, as (failed, exception, session) in ``later``: session
 * None, or the one whose transfer the error left broken; -1 when even that
 * cannot be made. */
static int
report_failure(PyObject *later, PyObject *failed, PyObject *session)
{
    PyObject *type, *value, *tb, *t = NULL;
    int r;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL)
        value = PyObject_CallFunction(PyExc_SystemError, "s", "a lane failed without an exception");
    if (value != NULL)
        t = PyTuple_Pack(3, failed, value, session);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    r = (t == NULL || PyList_Append(later, t)) ? -1 : 0;
    Py_XDECREF(t);
    return r;
}

/* Before a call into this module returns (rule 1): every lane it made hot
 * writes its copy back and lets go of it.  A lane whose copy could not be
 * written back whole has a transfer Python cannot trust: it is reported in
 * ``later`` with its session, which ends it.  0, or -1 with a Python error
 * when a report could not be made.  With ``report`` 0 (the call fails
 * anyway, its error set and kept) the lanes are written back unreported. */
static int
lanes_cool(Call *c, int report)
{
    PyObject *type, *value, *tb;
    int r = 0, pending = PyErr_Occurred() != NULL;
    if (pending)
        PyErr_Fetch(&type, &value, &tb);
    while (c->hot != NULL) {
        Lane *L = c->hot;
        Py_INCREF(L);
        if (lane_flush(L) < 0) {
            if (pending || !report || c->later == NULL)
                PyErr_Clear();
            else if (report_failure(c->later, c->failed, L->session ? L->session : Py_None) < 0) {
                PyErr_Clear();
                r = -1;
            }
        }
        lane_unload(L);
        Py_DECREF(L);
    }
    if (pending)
        PyErr_Restore(type, value, tb);
    else if (r < 0)
        PyErr_NoMemory();  /* the only way a report cannot be made */
    return r;
}

/* A call into this module begins: no garbage collection until it ends, so
 * no finalizer runs while lanes are hot (rule 1). */
static void
call_begin(Call *c, PyObject *later, PyObject *failed, unsigned char *buf)
{
    c->later = later;
    c->failed = failed;
    c->buf = buf;
    c->hot = NULL;
    c->gc = PyGC_Disable();
}

/* ... and ends: its lanes cooled (reported when ``report``), the collector
 * on again.  0, or -1 as lanes_cool. */
static int
call_end(Call *c, int report)
{
    int r = lanes_cool(c, report);
    if (c->gc)
        PyGC_Enable();
    c->gc = 0;
    return r;
}

/* The whole-window ACK step, on the lane's copy: 1 when served, 0 to hand
 * back (nothing changed), -1 on a Python error after the step was taken
 * (its packets may not have left: the deadline resends them). */
static int
fast_step(Lane *L, const unsigned char *data, Py_ssize_t n, Call *c)
{
    PyObject *pkts[MAX_WINDOW];
    Hot *h = &L->h;
    Py_ssize_t count = 0, k, bs = L->blksize;
    long off, number, last = -1, payload = 0;
    double now;
    ReaderState rs;

    if (n < 4 || data[0] != 0 || data[1] != 4)
        return 0;
    number = (data[2] << 8) | data[3];
    /* the clock first: Python may run there, and nothing is under way yet */
    if (lane_clock(L->seconds, &now)) {
        PyErr_Clear();
        return 0;
    }
    if (!L->hot && !lane_load(L, c))
        return 0;
    if (h->last >= 0)
        return 0; /* the last block is out: its ACK ends the transfer */
    off = (number - h->acked) & 0xFFFF;
    if (off == 0 || off != h->sent - h->acked || h->wlen != off)
        return 0;
    if (h->clean && L->estimator != Py_None && (h->acked || h->oack) && h->burst_none)
        return 0;

    /* read the blocks the window will take (rule 3) */
    rs = h->rs;
    Py_INCREF(rs.buf);
    for (k = 0; k < L->windowsize; k++) {
        PyObject *pkt = read_packet(L, &rs, bs);
        if (pkt == NULL)
            goto not_read; /* Python reads again and reports the error */
        pkts[count++] = pkt;
        if (PyBytes_GET_SIZE(pkt) - 4 < bs) {
            last = h->sent + count;
            break;
        }
    }

    /* ReadMachine.receive -> _heard */
    h->stepped = 1;
    h->packets_received++;
    h->last_heard_at = now;
    if (!h->heard) {
        h->heard = h->first_new = 1;
        h->first_reply_at = now;
    }
    /* _ack: RTOEstimator.sample on a clean burst */
    if (h->clean && L->estimator != Py_None && (h->acked || h->oack)) {
        double rtt = now - h->burst_at, rto;
        if (h->srtt_none) {
            h->srtt = rtt;
            h->rttvar = rtt / 2;
            h->srtt_none = 0;
        } else {
            h->rttvar += (fabs(h->srtt - rtt) - h->rttvar) / 4;
            h->srtt += (rtt - h->srtt) / 8;
        }
        rto = h->srtt + 4 * h->rttvar;
        h->rto = rto > h->floor ? rto : h->floor;
        h->sampled = 1;
    }
    h->acked += off;
    for (k = 0; k < h->wlen; k++)
        Py_CLEAR(L->win[k]);
    h->wlen = 0;
    /* feed, block by block: the first starts a burst (Watchdog.progress) */
    h->burst_at = now;
    h->burst_none = 0;
    h->clean = 1;
    h->since = now;
    h->deadline = now + (h->srtt_none ? L->first_wait : (h->rto < L->longest ? h->rto : L->longest));
    h->deadline_none = 0;
    for (k = 0; k < count; k++) {
        unsigned char *hd = (unsigned char *)PyBytes_AS_STRING(pkts[k]);
        long idx = h->sent + 1 + k;
        hd[0] = 0;
        hd[1] = 3;
        hd[2] = (idx >> 8) & 0xFF;
        hd[3] = idx & 0xFF;
        payload += PyBytes_GET_SIZE(pkts[k]) - 4;
        L->win[h->wlen++] = pkts[k]; /* the window takes the reference */
    }
    h->sent += count;
    h->bytes += payload;
    h->bytes_sent += payload;
    h->packets_sent += count;
    if (last >= 0)
        h->last = last;
    Py_SETREF(h->rs.buf, rs.buf);
    h->rs.pos = rs.pos;
    h->rs.offset = rs.offset;

    /* send */
    if (count == 1)
        send_one(L, L->win[0]);
    else if (count > 1 && send_window(L, L->win, count))
        return -1;
    /* rule 5: the lane's entry moves in place; Session._after files a new one */
    if (L->slot >= 0) {
        deadlines_set(L->deadlines, L, h->deadline);
    } else {
        PyObject *after = PyObject_GetAttr(L->session, s_after), *t, *nw = PyFloat_FromDouble(now);
        t = (after && nw) ? PyTuple_Pack(3, after, L->machine, nw) : NULL;
        Py_XDECREF(after);
        Py_XDECREF(nw);
        if (t == NULL || PyList_Append(c->later, t)) {
            Py_XDECREF(t);
            return -1;
        }
        Py_DECREF(t);
    }
    return 1;
not_read:
    PyErr_Clear();
    for (k = 0; k < count; k++)
        Py_DECREF(pkts[k]);
    Py_XDECREF(rs.buf);
    return 0;
}

/* One datagram on a lane's socket.  Returns SERVED, HANDED (back to
 * Python, in ``later``), FAILED (a Python error during the step, reported
 * in ``later`` as (failed, exception, None)), EMPTY (nothing was waiting),
 * or -1 when even that report could not be made. */
enum { SERVED, HANDED, FAILED, EMPTY };

static int
lane_event(Lane *L, Call *c)
{
    struct sockaddr_storage src;
    socklen_t slen = sizeof src;
    ssize_t got;
    int step, r = SERVED;
    PyObject *t = NULL;
    Py_INCREF(L);
    got = recvfrom(L->fd, c->buf, MAX_DATAGRAM, 0, (struct sockaddr *)&src, &slen);
    if (got < 0) {
        Py_DECREF(L);
        /* nothing waiting, or an ICMP error queued on the socket */
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? EMPTY : SERVED;
    }
    step = from_client(L, &src) ? fast_step(L, c->buf, got, c) : 0;
    if (step == 0) {
        PyObject *data = PyBytes_FromStringAndSize((char *)c->buf, got), *addr = make_addr(&src);
        if (data && addr)
            t = PyTuple_Pack(3, L->handler, data, addr);
        Py_XDECREF(data);
        Py_XDECREF(addr);
        r = HANDED;
    } else if (step < 0) {
        Py_DECREF(L);
        return report_failure(c->later, c->failed, Py_None) < 0 ? -1 : FAILED;
    }
    Py_DECREF(L);
    if (r == SERVED)
        return r;
    if (t == NULL || PyList_Append(c->later, t)) {
        Py_XDECREF(t);
        return -1;
    }
    Py_DECREF(t);
    return r;
}

/* Lane.drain(limit, failed) -> (later, read, more): what already waits on
 * the socket, up to ``limit`` datagrams, before the session decides one was
 * lost.  It stops after a datagram handed back (``more``): Python must take
 * it before the ones behind it, as its own drain would. */
static PyObject *
Lane_drain(Lane *self, PyObject *args)
{
    long read = 0, limit;
    int more = 0;
    PyObject *later, *failed, *result = NULL;
    unsigned char *buf;
    Call c;
    if (!PyArg_ParseTuple(args, "lO", &limit, &failed))
        return NULL;
    later = PyList_New(0);
    buf = PyMem_Malloc(MAX_DATAGRAM);
    if (later == NULL || buf == NULL) {
        PyMem_Free(buf);
        Py_XDECREF(later);
        return PyErr_NoMemory();
    }
    call_begin(&c, later, failed, buf);
    while (read < limit) {
        int r = lane_event(self, &c);
        if (r < 0)
            goto done;
        if (r == EMPTY)
            break;
        read++;
        if (r != SERVED) {
            more = 1;
            break;
        }
    }
    if (call_end(&c, 1) == 0)
        result = Py_BuildValue("(OlO)", later, read, more ? Py_True : Py_False);
done:
    call_end(&c, 0);  /* after a failure: an error is set, and kept */
    PyMem_Free(buf);
    Py_DECREF(later);
    return result;
}

static PyMethodDef lane_methods[] = {
    {"drain", (PyCFunction)Lane_drain, METH_VARARGS,
     "Read what waits, up to limit datagrams; (later, read, more)."},
    {NULL, NULL, 0, NULL},
};

/* The deadline of L's machine in *at: 1, or 0 when it has none (or none
 * to read). */
static int
machine_deadline(Lane *L, double *at)
{
    PyObject *d;
    if (L->hot) {
        *at = L->h.deadline;
        return !L->h.deadline_none;
    }
    d = L->mdict ? dget(L->mdict, s_deadline) : NULL;
    if (d == NULL || d == Py_None || ((*at = PyFloat_AsDouble(d)) == -1.0 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* Take the lanes whose deadline has come by ``now`` (the sessions' clock)
 * off ``D``: a (session.deadline_came, machine, now) for each in ``later``.
 * An entry whose session moved its deadline meanwhile (a Python step) is
 * moved with it; one whose session has none is dropped (it files a new one
 * when it sets one). */
static int
deadlines_due(Deadlines *D, double now, PyObject *later)
{
    PyObject *nw = NULL;
    int r = -1;
    while (D->n > 0 && D->heap[0]->due <= now + 1e-6) {  /* Session._deadline's tolerance */
        Lane *L = D->heap[0];
        PyObject *call, *t;
        double at;
        if (!machine_deadline(L, &at)) {
            deadlines_remove(D, L);
            continue;
        }
        if (at > now + 1e-6) {
            deadlines_set(D, L, at);
            continue;
        }
        if (nw == NULL && (nw = PyFloat_FromDouble(now)) == NULL)
            goto done;
        Py_INCREF(L);  /* the allocations below may run the collector */
        call = PyObject_GetAttr(L->session, s_deadline_came);
        t = call ? PyTuple_Pack(3, call, L->machine, nw) : NULL;
        Py_XDECREF(call);
        if (t == NULL || PyList_Append(later, t)) {
            Py_XDECREF(t);
            Py_DECREF(L);
            goto done;
        }
        Py_DECREF(t);
        deadlines_remove(D, L);
        Py_DECREF(L);
    }
    r = 0;
done:
    Py_XDECREF(nw);
    return r;
}

/* Deadlines.due(now) -> later */
static PyObject *
Deadlines_due(Deadlines *self, PyObject *arg)
{
    PyObject *later;
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    later = PyList_New(0);
    if (later != NULL && deadlines_due(self, now, later)) {
        Py_DECREF(later);
        return NULL;
    }
    return later;
}

/* Deadlines.keep(lane, at) */
static PyObject *
Deadlines_keep(Deadlines *self, PyObject *args)
{
    Lane *L;
    double at;
    if (!PyArg_ParseTuple(args, "O!d", &LaneType, &L, &at))
        return NULL;
    if (L->deadlines != self) {
        PyErr_SetString(PyExc_ValueError, "a lane of another poller");
        return NULL;
    }
    if (deadlines_set(self, L, at))
        return NULL;
    Py_RETURN_NONE;
}

/* Deadlines.refile(lanes): file again every lane of ``lanes`` (a dict)
 * that has a deadline and no entry, after a failure that may have lost
 * the calls that would have filed it (a deadline taken off, then the
 * report of it dropped). */
static PyObject *
Deadlines_refile(Deadlines *self, PyObject *lanes)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    if (!PyDict_Check(lanes)) {
        PyErr_SetString(PyExc_TypeError, "a dict of lanes");
        return NULL;
    }
    while (PyDict_Next(lanes, &pos, &key, &value)) {
        Lane *L = (Lane *)value;
        double at;
        if (!Py_IS_TYPE(value, &LaneType) || L->deadlines != self || L->slot >= 0 || !machine_deadline(L, &at))
            continue;
        if (deadlines_set(self, L, at))
            return NULL;
    }
    Py_RETURN_NONE;
}

/* Deadlines.forget(lane) */
static PyObject *
Deadlines_forget(Deadlines *self, PyObject *arg)
{
    if (!Py_IS_TYPE(arg, &LaneType)) {
        PyErr_SetString(PyExc_TypeError, "a Lane");
        return NULL;
    }
    deadlines_remove(self, (Lane *)arg);
    Py_RETURN_NONE;
}

static PyObject *
Deadlines_get_next(Deadlines *self, void *closure)
{
    return PyFloat_FromDouble(deadlines_next(self));
}

static Py_ssize_t
Deadlines_len(Deadlines *self)
{
    return self->n;
}

static int
Deadlines_traverse(Deadlines *self, visitproc visit, void *arg)
{
    Py_ssize_t i;
    for (i = 0; i < self->n; i++)
        Py_VISIT(self->heap[i]);
    return 0;
}

static int
Deadlines_clear(Deadlines *self)
{
    while (self->n > 0)
        deadlines_remove(self, self->heap[self->n - 1]);
    return 0;
}

static void
Deadlines_dealloc(Deadlines *self)
{
    PyObject_GC_UnTrack(self);
    Deadlines_clear(self);
    PyMem_Free(self->heap);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef deadlines_methods[] = {
    {"keep", (PyCFunction)Deadlines_keep, METH_VARARGS, "Keep the lane's deadline at the time given."},
    {"forget", (PyCFunction)Deadlines_forget, METH_O, "Keep the lane's deadline no more."},
    {"refile", (PyCFunction)Deadlines_refile, METH_O, "File again the lanes of a dict that have a deadline and no entry."},
    {"due", (PyCFunction)Deadlines_due, METH_O,
     "Take the lanes whose deadline has come by now off; their (session.deadline_came, machine, now)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef deadlines_getset[] = {
    {"next", (getter)Deadlines_get_next, NULL, "The earliest deadline kept, inf when none.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods deadlines_sequence = {.sq_length = (lenfunc)Deadlines_len};

static PyTypeObject DeadlinesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "txfbtftp._speedups.Deadlines",
    .tp_doc = "The deadlines of a poller's lanes, earliest first.",
    .tp_basicsize = sizeof(Deadlines),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Deadlines_traverse,
    .tp_clear = (inquiry)Deadlines_clear,
    .tp_methods = deadlines_methods,
    .tp_getset = deadlines_getset,
    .tp_as_sequence = &deadlines_sequence,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Deadlines_dealloc,
};

/* The lane of descriptor ``fdo`` in ``lanes`` serves its datagram: 1, or
 * 0 when the descriptor has no lane (its event is Python's), -1 on error. */
static int
lane_takes(PyObject *lanes, PyObject *fdo, Call *c)
{
    PyObject *lane = PyDict_GetItemWithError(lanes, fdo);
    if (lane == NULL || !Py_IS_TYPE(lane, &LaneType))
        return PyErr_Occurred() ? -1 : 0;
    return lane_event((Lane *)lane, c) < 0 ? -1 : 1;
}

/* serve(events, lanes, failed) -> (rest, later)
 *
 * events: epoll's [(fd, mask)]; lanes: {fd: Lane}.  Reads one datagram for
 * each event of a lane and serves it, or hands it back; rest is the events
 * of other descriptors, later the (call, a, b) Python must run, a lane's
 * failure among them as failed(exception, session or None). */
static PyObject *
serve(PyObject *module, PyObject *args)
{
    PyObject *events, *lanes, *failed, *rest, *later, *result = NULL;
    Py_ssize_t i, n;
    unsigned char *buf;
    Call c;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &events, &PyDict_Type, &lanes, &failed))
        return NULL;
    rest = PyList_New(0);
    later = PyList_New(0);
    buf = PyMem_Malloc(MAX_DATAGRAM);
    if (rest == NULL || later == NULL || buf == NULL) {
        PyMem_Free(buf);
        Py_XDECREF(rest);
        Py_XDECREF(later);
        return PyErr_NoMemory();
    }
    call_begin(&c, later, failed, buf);
    n = PyList_GET_SIZE(events);
    for (i = 0; i < n; i++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        int taken;
        if (!PyTuple_Check(ev) || PyTuple_GET_SIZE(ev) < 1) {
            PyErr_SetString(PyExc_TypeError, "events are (fd, mask)");
            goto done;
        }
        taken = lane_takes(lanes, PyTuple_GET_ITEM(ev, 0), &c);
        if (taken < 0 || (taken == 0 && PyList_Append(rest, ev)))
            goto done;
    }
    if (call_end(&c, 1) == 0)
        result = PyTuple_Pack(2, rest, later);
done:
    call_end(&c, 0);  /* after a failure: an error is set, and kept */
    PyMem_Free(buf);
    Py_DECREF(rest);
    Py_DECREF(later);
    return result;
}

static double
monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* While parked, the reactor's epoll (which holds the poller's as one of its
 * readers) is turned inside out: the poller's leaves it and the reactor's
 * joins the poller's, so one epoll_wait wakes for a lane's datagram or for
 * anything the reactor watches (a nested pair would loop).  Waiting on both
 * with ppoll instead cost about a tenth more CPU per lock-step block.  It
 * takes Twisted's registration of the poller as it is: a reader, EPOLLIN,
 * data.fd the descriptor.  ``parked`` 1 turns it, 0 turns it back; -1 with
 * errno on failure, nothing changed. */
static int
nest(int inner, int reactor, int parked)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    if (parked) {
        if (epoll_ctl(reactor, EPOLL_CTL_DEL, inner, NULL) < 0)
            return -1;
        ev.data.fd = reactor;
        if (epoll_ctl(inner, EPOLL_CTL_ADD, reactor, &ev) == 0)
            return 0;
        parked = errno;
        ev.data.fd = inner;
        epoll_ctl(reactor, EPOLL_CTL_ADD, inner, &ev);
        errno = parked;
        return -1;
    }
    epoll_ctl(inner, EPOLL_CTL_DEL, reactor, NULL);
    ev.data.fd = inner;
    return epoll_ctl(reactor, EPOLL_CTL_ADD, inner, &ev);
}

/* park(epfd, other, lanes, failed, timeout, deadlines, seconds, quick)
 *   -> (rest, later, served)
 *
 * Sleep until the poller's epoll (epfd) or the reactor's (other, which
 * holds epfd as a reader) has something, for at most ``timeout`` seconds,
 * serving the lanes' datagrams as they come without going back to Python,
 * and until the earliest of the lanes' ``deadlines`` (on the sessions'
 * clock, ``seconds``).  Returns when Python has work: an event of a
 * descriptor without a lane (rest), a call to make (later: a datagram
 * handed back, a deadline come), the reactor's descriptors ready, a signal,
 * or the time up; and once the lanes have served a datagram that came
 * within ``quick`` seconds of the park or of the one before (a spin that
 * long would have caught it: the poller's busy polling pays again).  ``served`` is how many
 * datagrams the lanes took meanwhile.  The GIL is released while asleep,
 * so the reactor's threads run. */
static PyObject *
park(PyObject *module, PyObject *args)
{
    int epfd, other, parked = 0;
    double timeout, deadline, skew;
    long served = 0;
    PyObject *lanes, *failed, *seconds, *rest, *later, *result = NULL;
    Deadlines *D;
    unsigned char *buf;
    struct epoll_event evs[BATCH];
    double quick, prev;
    long before = 0;
    Call c;
    if (!PyArg_ParseTuple(args, "iiO!OdO!Od", &epfd, &other, &PyDict_Type, &lanes, &failed, &timeout,
                          &DeadlinesType, &D, &seconds, &quick))
        return NULL;
    rest = PyList_New(0);
    later = PyList_New(0);
    buf = PyMem_Malloc(MAX_DATAGRAM);
    call_begin(&c, later, failed, buf);
    if (rest == NULL || later == NULL || buf == NULL) {
        if (buf == NULL)
            PyErr_NoMemory();
        goto done;
    }
    if (nest(epfd, other, 1) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    parked = 1;
    prev = monotonic();
    deadline = prev + timeout;
    if (lane_clock(seconds, &skew))
        goto done;
    skew -= monotonic();  /* the sessions' clock, less the monotonic one */
    for (;;) {
        double t = monotonic(), due = deadlines_next(D) - skew, until;
        int n, i, reactor = 0;
        if (t >= due) {
            double now;
            if (lane_clock(seconds, &now) || deadlines_due(D, now, later))
                goto done;
            if (PyList_GET_SIZE(later))
                break;
            skew = now - t;  /* nothing came: the sessions' clock may have been set back */
            due = deadlines_next(D) - skew;
        }
        if (t >= deadline)
            break;
        until = deadline < due ? deadline : due;
        Py_BEGIN_ALLOW_THREADS
        n = (int)ceil((until - t) * 1000);
        n = epoll_wait(epfd, evs, BATCH, n > 0 ? n : 1);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno == EINTR)
                break; /* a signal: its handler runs once Python has control */
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        for (i = 0; i < n; i++) {
            PyObject *fdo, *ev;
            int taken;
            if (evs[i].data.fd == other) {
                reactor = 1;
                continue;
            }
            fdo = PyLong_FromLong(evs[i].data.fd);
            if (fdo == NULL)
                goto done;
            taken = lane_takes(lanes, fdo, &c);
            if (taken != 0) {
                Py_DECREF(fdo);
                if (taken < 0)
                    goto done;
                served++;
                continue;
            }
            ev = Py_BuildValue("(Ni)", fdo, (int)evs[i].events);
            if (ev == NULL || PyList_Append(rest, ev)) {
                Py_XDECREF(ev);
                goto done;
            }
            Py_DECREF(ev);
        }
        if (reactor || PyList_GET_SIZE(rest) || PyList_GET_SIZE(later))
            break;
        if (served > before) {
            double now = monotonic();
            if (now - prev <= quick)
                break;
            prev = now;
            before = served;
        }
    }
    if (call_end(&c, 1) == 0)
        result = Py_BuildValue("(OOl)", rest, later, served);
done:
    call_end(&c, 0);  /* after a failure: an error is set, and kept */
    if (parked && nest(epfd, other, 0) < 0) {
        Py_CLEAR(result);
        PyErr_SetFromErrno(PyExc_OSError);
    }
    PyMem_Free(buf);
    Py_XDECREF(rest);
    Py_XDECREF(later);
    return result;
}

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "txfbtftp._speedups.Lane",
    .tp_doc = "The DATA hot path of one download, compiled: see the module's rules.",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_methods = lane_methods,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
};

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, "Serve the events of lanes; return (rest, later)."},
    {"park", park, METH_VARARGS,
     "Sleep until Python has work, serving lanes and keeping their deadlines; (rest, later, served)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "txfbtftp._speedups", "The compiled twin of a download's DATA hot path.", -1, methods,
};

#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;
    INTERN(s_machine_state, "state"); INTERN(s_acked, "_acked"); INTERN(s_sent, "_sent");
    INTERN(s_last, "_last"); INTERN(s_window, "_window"); INTERN(s_clean, "_clean");
    INTERN(s_burst_at, "_burst_at"); INTERN(s_restart_armed, "_restart_armed"); INTERN(s_deadline, "deadline");
    INTERN(s_established, "established"); INTERN(s_bytes, "bytes"); INTERN(s_bytes_sent, "bytes_sent");
    INTERN(s_packets_sent, "packets_sent"); INTERN(s_packets_received, "packets_received");
    INTERN(s_last_heard_at, "last_heard_at"); INTERN(s_first_reply_at, "first_reply_at"); INTERN(s_oack, "oack");
    INTERN(s_pending, "pending"); INTERN(s_gate, "_gate"); INTERN(s_wait, "_wait"); INTERN(s_tries, "tries");
    INTERN(s_since, "since"); INTERN(s_srtt, "srtt"); INTERN(s_rttvar, "rttvar"); INTERN(s_rto, "rto");
    INTERN(s_floor, "floor"); INTERN(s_buf, "_buf"); INTERN(s_pos, "_pos"); INTERN(s_offset, "_offset");
    INTERN(s_readers, "readers"); INTERN(s_offload, "offload"); INTERN(s_after, "_after");
    INTERN(s_deadline_came, "deadline_came");
    if (PyType_Ready(&LaneType) < 0 || PyType_Ready(&DeadlinesType) < 0)
        return NULL;
    {
        PyObject *time = PyImport_ImportModule("time");
        if (time == NULL)
            return NULL;
        time_time = PyObject_GetAttrString(time, "time");
        Py_DECREF(time);
        if (time_time == NULL)
            return NULL;
    }
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(&LaneType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&DeadlinesType);
    if (PyModule_AddObject(m, "Deadlines", (PyObject *)&DeadlinesType) < 0) {
        Py_DECREF(&DeadlinesType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
