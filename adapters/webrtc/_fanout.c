/* adapters.webrtc._fanout: the room's packet to every listener in one call, in C, without the GIL.
 *
 * Per listener a Stream holds what the Python Outlet holds: its RTP header fields (SSRC, payload
 * type, sequence number, timestamp origin, the MID header extension), its outbound SRTP state
 * (session keys derived from the DTLS-SRTP master key and salt aiortc negotiated, the rollover
 * counter) and its own dup() of the ICE socket with the nominated remote address.
 * fanout() takes every (streams, payload, pts) group of a tick, releases the GIL, rewrites each
 * header, protects, and sends with sendmmsg() (one call per run of messages for one socket),
 * sharded over a few threads when there are enough listeners.
 *
 * SRTP is done with OpenSSL's libcrypto rather than libsrtp2: libcrypto is already on every machine
 * that builds CPython's ssl module (libssl-dev), so the extension needs no new system library;
 * it gives AES-NI through EVP for AES-CM and AES-GCM; and a Stream's state is plain memory that
 * one thread owns for a batch, where libsrtp's session would add a stream lookup per packet. The
 * protect transforms are RFC 3711 (AES_CM_128_HMAC_SHA1_80, the key derivation with its AES-CM
 * PRF) and RFC 7714 (AEAD_AES_128_GCM, AEAD_AES_256_GCM: the three profiles aiortc negotiates);
 * tests/integration/webrtc/test_native_fanout.py proves the output byte-identical to libsrtp's.
 * UDP GSO is not used: it coalesces segments to one destination per socket, and aioice gives
 * each peer a socket of its own, to which a tick sends exactly one datagram.
 *
 * Bad arguments raise Python exceptions; a failing socket is counted, never fatal (EAGAIN and ENOBUFS
 * drop that listener's packet, never block; other errors count in `errors`). SRTP: _fanout_srtp.h. */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA1_Init & co: HMAC with precomputed pads, no allocation */
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "_fanout_srtp.h"
static unsigned long long call_counter;

/* ---- Stream ----------------------------------------------------------------------------------- */

static int get_uint(PyObject *o, const char *name, unsigned long long max, unsigned long long *out)
{
    unsigned long long v;
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", name);
        return 0;
    }
    v = PyLong_AsUnsignedLongLong(o);
    if ((v == (unsigned long long)-1 && PyErr_Occurred()) || v > max) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu", name, max);
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_addr(PyObject *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *host;
    unsigned long long port;
    memset(ss, 0, sizeof *ss);
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2 || !PyUnicode_Check(PyTuple_GET_ITEM(addr, 0))) {
        PyErr_SetString(PyExc_TypeError, "addr must be a (host, port) tuple");
        return 0;
    }
    if (!get_uint(PyTuple_GET_ITEM(addr, 1), "port", 65535, &port))
        return 0;
    if ((host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(addr, 0))) == NULL)
        return 0;
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET, v4->sin_port = htons((uint16_t)port), *len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6, v6->sin6_port = htons((uint16_t)port), *len = sizeof *v6;
    } else {
        PyErr_SetString(PyExc_ValueError, "addr's host must be a numeric IPv4 or IPv6 address");
        return 0;
    }
    return 1;
}

static void stream_close_fd(Stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static int Stream_init(Stream *s, PyObject *args, PyObject *kw)
{
    static char *names[] = {"profile", "key", "salt", "ssrc", "payload_type", "seq", "ts_origin",
                            "ext", "fd", "addr", "roc", "marker", NULL};
    const char *profile;
    Py_buffer key = {0}, salt = {0}, ext = {0};
    PyObject *ssrc, *pt, *seq, *ts, *addr = Py_None, *roc = NULL;
    int fd = -1, ok = -1, keylen, saltlen, marker = 1;
    unsigned long long v_ssrc, v_pt, v_seq, v_ts, v_roc = 0;
    if (s->cipher != NULL || s->fd >= 0 || s->inflight) {
        PyErr_SetString(PyExc_RuntimeError, "a Stream is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sy*y*OOOO|y*iOOp:Stream", names, &profile, &key, &salt, &ssrc, &pt,
                                     &seq, &ts, &ext, &fd, &addr, &roc, &marker))
        return -1;
    if (strcmp(profile, "SRTP_AES128_CM_SHA1_80") == 0)
        s->profile = CM_SHA1_80, keylen = 16, saltlen = 14;
    else if (strcmp(profile, "SRTP_AEAD_AES_128_GCM") == 0)
        s->profile = GCM_128, keylen = 16, saltlen = 12;
    else if (strcmp(profile, "SRTP_AEAD_AES_256_GCM") == 0)
        s->profile = GCM_256, keylen = 32, saltlen = 12;
    else {
        PyErr_Format(PyExc_ValueError, "unknown SRTP profile %.60s", profile);
        goto done;
    }
    if (key.len != keylen || salt.len != saltlen) {
        PyErr_Format(PyExc_ValueError, "%s takes a %d-byte key and a %d-byte salt", profile, keylen, saltlen);
        goto done;
    }
    if (ext.buf != NULL && (ext.len > MAX_EXT || ext.len % 4 != 0)) {
        PyErr_Format(PyExc_ValueError, "ext is a whole RTP header extension: a multiple of 4 bytes, at most %d",
                     MAX_EXT);
        goto done;
    }
    if (!get_uint(ssrc, "ssrc", 0xFFFFFFFFu, &v_ssrc) || !get_uint(pt, "payload_type", 127, &v_pt) ||
        !get_uint(seq, "seq", 0xFFFF, &v_seq) || !get_uint(ts, "ts_origin", 0xFFFFFFFFu, &v_ts) ||
        (roc != NULL && roc != Py_None && !get_uint(roc, "roc", 0xFFFFFFFFu, &v_roc)))
        goto done;
    if (fd >= 0) {
        if (addr == Py_None) {
            PyErr_SetString(PyExc_ValueError, "a Stream with a socket needs its remote addr");
            goto done;
        }
        if (!parse_addr(addr, &s->addr, &s->addrlen))
            goto done;
    } else if (fd != -1) {
        PyErr_SetString(PyExc_ValueError, "fd must be a socket's file descriptor, or -1 for none");
        goto done;
    }
    s->ssrc = (uint32_t)v_ssrc, s->pt = (uint8_t)v_pt, s->seq = (uint16_t)v_seq;
    s->ts_origin = (uint32_t)v_ts, s->roc = (uint32_t)v_roc, s->marker = marker ? 0x80 : 0;
    s->ext_len = (uint8_t)(ext.buf != NULL ? ext.len : 0);
    if (s->ext_len)
        memcpy(s->ext, ext.buf, s->ext_len);
    if (!stream_keys(s, key.buf, keylen, salt.buf, saltlen)) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto could not set up the SRTP keys");
        goto done;
    }
    if (fd >= 0) {
        int type = 0;
        socklen_t tl = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_DGRAM) {
            PyErr_SetString(PyExc_ValueError, "fd must be an open UDP socket");
            goto done;
        }
        if ((s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
    }
    ok = 0;
done:
    if (ok != 0 && s->cipher != NULL)
        EVP_CIPHER_CTX_free(s->cipher), s->cipher = NULL;
    PyBuffer_Release(&key);
    PyBuffer_Release(&salt);
    if (ext.buf != NULL)
        PyBuffer_Release(&ext);
    return ok;
}

static PyObject *Stream_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Stream *s = (Stream *)type->tp_alloc(type, 0);
    if (s != NULL)
        s->fd = -1;
    return (PyObject *)s;
}

static void Stream_dealloc(Stream *s)
{
    stream_close_fd(s);
    if (s->cipher != NULL)
        EVP_CIPHER_CTX_free(s->cipher);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *Stream_close(Stream *s, PyObject *unused)
{
    if (s->inflight) /* a batch without the GIL reads it: atomically */
        __atomic_store_n(&s->close_pending, 1, __ATOMIC_RELAXED);
    else
        stream_close_fd(s);
    Py_RETURN_NONE;
}

static int get_payload(PyObject *o, Py_buffer *b)
{
    if (PyObject_GetBuffer(o, b, PyBUF_SIMPLE) != 0)
        return 0;
    if (b->len < 1 || b->len > MAX_PAYLOAD) {
        PyBuffer_Release(b);
        PyErr_Format(PyExc_ValueError, "a payload is 1..%d bytes", MAX_PAYLOAD);
        return 0;
    }
    return 1;
}

static PyObject *Stream_protect(Stream *s, PyObject *args)
{
    PyObject *payload, *pts;
    Py_buffer b;
    unsigned long long p;
    uint8_t out[MAX_PACKET];
    int len;
    if (s->cipher == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Stream not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO:protect", &payload, &pts) || !get_uint(pts, "pts", 0xFFFFFFFFu, &p) ||
        !get_payload(payload, &b))
        return NULL;
    len = build(s, b.buf, (int)b.len, (uint32_t)p, out);
    PyBuffer_Release(&b);
    if (len < 0) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to protect the packet");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)out, len);
}

static PyObject *Stream_get_closed(Stream *s, void *c) { return PyBool_FromLong(s->fd < 0 || s->close_pending); }

static PyMethodDef Stream_methods[] = {
    {"close", (PyCFunction)Stream_close, METH_NOARGS, "Release the socket now (or when the running batch ends)."},
    {"protect", (PyCFunction)Stream_protect, METH_VARARGS,
     "protect(payload, pts) -> bytes: the next SRTP packet of this stream, not sent (tests, diagnostics)."},
    {NULL}};

static PyMemberDef Stream_members[] = {
    {"sent", T_ULONGLONG, offsetof(Stream, sent), READONLY, "packets the kernel accepted"},
    {"dropped", T_ULONGLONG, offsetof(Stream, dropped), READONLY, "packets dropped: socket full or closed"},
    {"errors", T_ULONGLONG, offsetof(Stream, errors), READONLY, "packets that failed with another error"},
    {"last_errno", T_INT, offsetof(Stream, last_errno), READONLY, "errno of the last failed send"},
    {"seq", T_USHORT, offsetof(Stream, seq), READONLY, "next RTP sequence number"},
    {"roc", T_UINT, offsetof(Stream, roc), READONLY, "SRTP rollover counter"},
    {"ssrc", T_UINT, offsetof(Stream, ssrc), READONLY, "RTP SSRC"},
    {NULL}};

static PyGetSetDef Stream_getset[] = {{"closed", (getter)Stream_get_closed, NULL, "no socket to send on", NULL},
                                      {NULL}};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "adapters.webrtc._fanout.Stream",
    .tp_basicsize = sizeof(Stream),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One listener's outbound RTP/SRTP state and socket.",
    .tp_new = Stream_new,
    .tp_init = (initproc)Stream_init,
    .tp_dealloc = (destructor)Stream_dealloc,
    .tp_methods = Stream_methods,
    .tp_members = Stream_members,
    .tp_getset = Stream_getset,
};

/* ---- fanout ----------------------------------------------------------------------------------- */

typedef struct {
    Stream *s;
    const uint8_t *payload;
    int plen;
    uint32_t pts;
} Item;

typedef struct {
    Item *items;
    size_t n;
    unsigned long long sent, dropped, errors;
    pthread_t thread;
    int started;
} Shard;

static void send_runs(Shard *sh, struct mmsghdr *msgs, Stream **who, int k)
{
    int i = 0;
    while (i < k) {
        int j = i + 1, r;
        while (j < k && who[j]->fd == who[i]->fd)
            j++;
        r = sendmmsg(who[i]->fd, msgs + i, (unsigned)(j - i), MSG_DONTWAIT);
        if (r > 0) {
            for (int m = i; m < i + r; m++)
                who[m]->sent++;
            sh->sent += (unsigned)r;
            i += r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            int e = r < 0 ? errno : EIO;
            if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
                who[i]->dropped++, sh->dropped++;
            } else {
                who[i]->errors++, sh->errors++;
                who[i]->last_errno = e;
            }
            i++;
        }
    }
}

static void *run_shard(void *arg)
{
    Shard *sh = arg;
    uint8_t(*bufs)[MAX_PACKET] = malloc(BATCH * sizeof *bufs);
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    Stream *who[BATCH];
    int k = 0;
    if (bufs == NULL) {
        for (size_t n = 0; n < sh->n; n++)
            sh->items[n].s->dropped++, sh->dropped++;
        return NULL;
    }
    for (size_t n = 0; n < sh->n; n++) {
        Item *it = &sh->items[n];
        Stream *s = it->s;
        int len;
        if (s->fd < 0 || __atomic_load_n(&s->close_pending, __ATOMIC_RELAXED)) {
            s->dropped++, sh->dropped++;
            continue;
        }
        if ((len = build(s, it->payload, it->plen, it->pts, bufs[k])) < 0) {
            s->errors++, sh->errors++;
            continue;
        }
        iov[k].iov_base = bufs[k], iov[k].iov_len = (size_t)len;
        memset(&msgs[k], 0, sizeof msgs[k]);
        msgs[k].msg_hdr.msg_name = &s->addr, msgs[k].msg_hdr.msg_namelen = s->addrlen;
        msgs[k].msg_hdr.msg_iov = &iov[k], msgs[k].msg_hdr.msg_iovlen = 1;
        who[k++] = s;
        if (k == BATCH)
            send_runs(sh, msgs, who, k), k = 0;
    }
    send_runs(sh, msgs, who, k);
    free(bufs);
    return NULL;
}

static PyObject *fanout(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *names[] = {"groups", "threads", NULL};
    PyObject *groups, *seq = NULL, *result = NULL;
    PyObject **gstreams = NULL;
    Py_buffer *payloads = NULL;
    Item *items = NULL;
    Shard shards[MAX_THREADS];
    Py_ssize_t ngroups = 0, g, held = 0, bufs = 0;
    size_t n = 0, cap = 0;
    int threads = 1, dup = 0;
    unsigned long long mark, sent = 0, dropped = 0, errors = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|i:fanout", names, &groups, &threads))
        return NULL;
    if (threads < 1 || threads > MAX_THREADS)
        return PyErr_Format(PyExc_ValueError, "threads must be in 1..%d", MAX_THREADS);
    if ((seq = PySequence_Fast(groups, "groups must be a sequence of (streams, payload, pts)")) == NULL)
        return NULL;
    ngroups = PySequence_Fast_GET_SIZE(seq);
    mark = ++call_counter;
    gstreams = PyMem_Calloc((size_t)ngroups + 1, sizeof *gstreams);
    payloads = PyMem_Calloc((size_t)ngroups + 1, sizeof *payloads);
    if (gstreams == NULL || payloads == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (g = 0; g < ngroups; g++) {
        PyObject *group = PySequence_Fast_GET_ITEM(seq, g), *streams;
        unsigned long long pts;
        if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) != 3) {
            PyErr_SetString(PyExc_TypeError, "each group is a (streams, payload, pts) tuple");
            goto done;
        }
        if (!get_uint(PyTuple_GET_ITEM(group, 2), "pts", 0xFFFFFFFFu, &pts))
            goto done;
        if (!get_payload(PyTuple_GET_ITEM(group, 1), &payloads[g]))
            goto done;
        bufs = g + 1;
        streams = PySequence_Fast(PyTuple_GET_ITEM(group, 0), "a group's streams must be a sequence of Stream");
        if (streams == NULL)
            goto done;
        gstreams[g] = streams;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(streams); i++) {
            PyObject *o = PySequence_Fast_GET_ITEM(streams, i);
            Stream *s = (Stream *)o;
            if (!PyObject_TypeCheck(o, &StreamType)) {
                PyErr_Format(PyExc_TypeError, "expected Stream, got %.80s", Py_TYPE(o)->tp_name);
                goto done;
            }
            if (s->cipher == NULL) {
                PyErr_SetString(PyExc_RuntimeError, "Stream not initialised");
                goto done;
            }
            if (s->inflight) {
                PyErr_SetString(PyExc_RuntimeError, "a Stream is in another fanout() running now");
                goto done;
            }
            if (n == cap) {
                Item *more = PyMem_Realloc(items, (cap = cap ? 2 * cap : 256) * sizeof *items);
                if (more == NULL) {
                    PyErr_NoMemory();
                    goto done;
                }
                items = more;
            }
            dup |= s->mark == mark;
            s->mark = mark;
            items[n].s = s, items[n].payload = payloads[g].buf, items[n].plen = (int)payloads[g].len;
            items[n].pts = (uint32_t)pts;
            n++;
        }
    }
    /* Every stream is held (a reference and inflight) while the GIL is released: a listener removed
       meanwhile is only freed, and its socket closed, once the batch is done with it. */
    for (size_t i = 0; i < n; i++)
        Py_INCREF(items[i].s), items[i].s->inflight++;
    held = 1;
    if (dup || (size_t)threads * MIN_PER_THREAD > n)
        threads = dup ? 1 : (int)(n / MIN_PER_THREAD) > 0 ? (int)(n / MIN_PER_THREAD) : 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    memset(shards, 0, sizeof shards);
    Py_BEGIN_ALLOW_THREADS
    size_t per = n / (size_t)threads, extra = n % (size_t)threads, at = 0;
    for (int t = 0; t < threads; t++) {
        size_t count = per + ((size_t)t < extra ? 1 : 0);
        shards[t].items = items + at, shards[t].n = count, at += count;
        if (t > 0)
            shards[t].started = pthread_create(&shards[t].thread, NULL, run_shard, &shards[t]) == 0;
    }
    run_shard(&shards[0]);
    for (int t = 1; t < threads; t++) {
        if (shards[t].started)
            pthread_join(shards[t].thread, NULL);
        else
            run_shard(&shards[t]); /* no thread to be had: this one does it */
    }
    Py_END_ALLOW_THREADS
    for (int t = 0; t < threads; t++)
        sent += shards[t].sent, dropped += shards[t].dropped, errors += shards[t].errors;
    result = Py_BuildValue("(KKK)", sent, dropped, errors);
done:
    if (held) {
        for (size_t i = 0; i < n; i++) {
            Stream *s = items[i].s;
            if (--s->inflight == 0 && s->close_pending)
                s->close_pending = 0, stream_close_fd(s);
            Py_DECREF(s);
        }
    }
    for (g = 0; g < bufs; g++)
        PyBuffer_Release(&payloads[g]);
    for (g = 0; gstreams != NULL && g < ngroups; g++)
        Py_XDECREF(gstreams[g]);
    PyMem_Free(gstreams);
    PyMem_Free(payloads);
    PyMem_Free(items);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef module_methods[] = {
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_VARARGS | METH_KEYWORDS,
     "fanout(groups, threads=1) -> (sent, dropped, errors): for each (streams, payload, pts) group, the payload "
     "to every stream, headers rewritten, SRTP-protected and sent, with the GIL released."},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fanout", "Native SRTP fan-out (see _fanout.c).", -1,
                                    module_methods};

PyMODINIT_FUNC PyInit__fanout(void)
{
    PyObject *m;
    if (PyType_Ready(&StreamType) < 0 || (m = PyModule_Create(&module)) == NULL)
        return NULL;
    Py_INCREF(&StreamType);
    if (PyModule_AddObject(m, "Stream", (PyObject *)&StreamType) < 0 ||
        PyModule_AddObject(m, "PROFILES",
                           Py_BuildValue("(sss)", "SRTP_AEAD_AES_256_GCM", "SRTP_AEAD_AES_128_GCM",
                                         "SRTP_AES128_CM_SHA1_80")) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PAYLOAD", MAX_PAYLOAD) < 0 ||
        PyModule_AddIntConstant(m, "MAX_THREADS", MAX_THREADS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
