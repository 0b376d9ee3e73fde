/* The SRTP half of _fanout.c: a listener's Stream state and its protect transforms, on OpenSSL libcrypto.
 * Included once, by _fanout.c (after Python.h), so it holds static definitions. */
#ifndef SPACEBRIDGE_FANOUT_SRTP_H
#define SPACEBRIDGE_FANOUT_SRTP_H
#include <openssl/evp.h>
#include <openssl/sha.h>

#define MAX_PAYLOAD 1400
#define MAX_EXT 64
#define MAX_PACKET (12 + MAX_EXT + MAX_PAYLOAD + 16)
#define BATCH 64
#define MAX_THREADS 16
#define MIN_PER_THREAD 64

enum { CM_SHA1_80 = 1, GCM_128 = 2, GCM_256 = 3 };

typedef struct {
    PyObject_HEAD
    int profile;
    EVP_CIPHER_CTX *cipher;
    SHA_CTX inner, outer; /* HMAC-SHA1 after the ipad / opad block of the auth key */
    uint8_t salt[14];
    uint32_t ssrc, ts_origin, roc;
    uint16_t seq;
    uint8_t pt, marker, ext_len;
    uint8_t ext[MAX_EXT];
    int fd; /* our own dup of the peer's socket; -1 when none or closed */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int inflight;      /* fanout() calls holding it (changed with the GIL held) */
    int close_pending; /* close() came during a batch: the batch closes the fd */
    unsigned long long sent, dropped, errors, mark;
    int last_errno;
} Stream;

/* ---- SRTP ------------------------------------------------------------------------------------- */

/* RFC 3711 4.3.1 key derivation (kdr 0): AES-CM keystream of the master key, IV = (salt XOR label<<48)<<16. */
static int kdf(const uint8_t *mkey, int keylen, const uint8_t *msalt, int saltlen, uint8_t label, uint8_t *out,
               int outlen)
{
    uint8_t iv[16] = {0}, zeros[64] = {0};
    int len = 0, ok;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c == NULL)
        return 0;
    memcpy(iv, msalt, (size_t)saltlen);
    iv[7] ^= label;
    ok = EVP_EncryptInit_ex(c, keylen == 32 ? EVP_aes_256_ctr() : EVP_aes_128_ctr(), NULL, mkey, iv) == 1 &&
         EVP_EncryptUpdate(c, out, &len, zeros, outlen) == 1 && len == outlen;
    EVP_CIPHER_CTX_free(c);
    return ok;
}

static int stream_keys(Stream *s, const uint8_t *mkey, int keylen, const uint8_t *msalt, int saltlen)
{
    uint8_t key[32], auth[64] = {0}, pad[64];
    const EVP_CIPHER *cipher;
    int i;
    if (!kdf(mkey, keylen, msalt, saltlen, 0, key, keylen) || !kdf(mkey, keylen, msalt, saltlen, 2, s->salt, saltlen))
        return 0;
    if (s->profile == CM_SHA1_80) {
        if (!kdf(mkey, keylen, msalt, saltlen, 1, auth, 20))
            return 0;
        for (i = 0; i < 64; i++)
            pad[i] = auth[i] ^ 0x36;
        SHA1_Init(&s->inner);
        SHA1_Update(&s->inner, pad, 64);
        for (i = 0; i < 64; i++)
            pad[i] = auth[i] ^ 0x5c;
        SHA1_Init(&s->outer);
        SHA1_Update(&s->outer, pad, 64);
        cipher = EVP_aes_128_ctr();
    } else {
        cipher = s->profile == GCM_128 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
    }
    s->cipher = EVP_CIPHER_CTX_new();
    return s->cipher != NULL && EVP_EncryptInit_ex(s->cipher, cipher, NULL, key, NULL) == 1;
}

/* Header for this listener around the shared payload, protected in place; returns the length or -1. */
static int build(Stream *s, const uint8_t *payload, int plen, uint32_t pts, uint8_t *out)
{
    int hl = 12 + s->ext_len, len = 0, fin = 0;
    uint32_t ts = s->ts_origin + pts;
    uint8_t iv[16] = {0};
    out[0] = s->ext_len ? 0x90 : 0x80;
    out[1] = (uint8_t)(s->marker | s->pt);
    out[2] = (uint8_t)(s->seq >> 8), out[3] = (uint8_t)s->seq;
    out[4] = (uint8_t)(ts >> 24), out[5] = (uint8_t)(ts >> 16), out[6] = (uint8_t)(ts >> 8), out[7] = (uint8_t)ts;
    out[8] = (uint8_t)(s->ssrc >> 24), out[9] = (uint8_t)(s->ssrc >> 16);
    out[10] = (uint8_t)(s->ssrc >> 8), out[11] = (uint8_t)s->ssrc;
    memcpy(out + 12, s->ext, s->ext_len);
    if (s->profile == CM_SHA1_80) {
        /* IV = salt<<16 XOR SSRC<<64 XOR index<<16, index = ROC<<16 | SEQ */
        uint8_t roc[4] = {(uint8_t)(s->roc >> 24), (uint8_t)(s->roc >> 16), (uint8_t)(s->roc >> 8), (uint8_t)s->roc};
        uint8_t digest[20];
        SHA_CTX h;
        memcpy(iv, s->salt, 14);
        for (int i = 0; i < 4; i++)
            iv[4 + i] ^= out[8 + i], iv[8 + i] ^= roc[i];
        iv[12] ^= out[2], iv[13] ^= out[3];
        if (EVP_EncryptInit_ex(s->cipher, NULL, NULL, NULL, iv) != 1 ||
            EVP_EncryptUpdate(s->cipher, out + hl, &len, payload, plen) != 1 || len != plen)
            return -1;
        h = s->inner;
        SHA1_Update(&h, out, (size_t)(hl + plen));
        SHA1_Update(&h, roc, 4);
        SHA1_Final(digest, &h);
        h = s->outer;
        SHA1_Update(&h, digest, 20);
        SHA1_Final(digest, &h);
        memcpy(out + hl + plen, digest, 10);
        len = hl + plen + 10;
    } else {
        /* RFC 7714 8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt; the header is the AAD */
        memcpy(iv, s->salt, 12);
        for (int i = 0; i < 4; i++)
            iv[2 + i] ^= out[8 + i];
        iv[6] ^= (uint8_t)(s->roc >> 24), iv[7] ^= (uint8_t)(s->roc >> 16);
        iv[8] ^= (uint8_t)(s->roc >> 8), iv[9] ^= (uint8_t)s->roc;
        iv[10] ^= out[2], iv[11] ^= out[3];
        if (EVP_EncryptInit_ex(s->cipher, NULL, NULL, NULL, iv) != 1 ||
            EVP_EncryptUpdate(s->cipher, NULL, &len, out, hl) != 1 ||
            EVP_EncryptUpdate(s->cipher, out + hl, &len, payload, plen) != 1 || len != plen ||
            EVP_EncryptFinal_ex(s->cipher, out + hl + plen, &fin) != 1 ||
            EVP_CIPHER_CTX_ctrl(s->cipher, EVP_CTRL_GCM_GET_TAG, 16, out + hl + plen) != 1)
            return -1;
        len = hl + plen + 16;
    }
    s->marker = 0;
    s->seq = (uint16_t)(s->seq + 1);
    if (s->seq == 0)
        s->roc++;
    return len;
}

#endif
