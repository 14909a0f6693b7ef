/*
 * media.c - local media files as data: URIs (see media.h).
 */
#include "media.h"

#include <string.h>

#include "defaults.h"

static const kmedia_type PNG = { "image/png", "image", KL_MEDIA_IMAGE_MAX };
static const kmedia_type JPEG = { "image/jpeg", "image", KL_MEDIA_IMAGE_MAX };
static const kmedia_type GIF = { "image/gif", "image", KL_MEDIA_IMAGE_MAX };
static const kmedia_type WEBP = { "image/webp", "image", KL_MEDIA_IMAGE_MAX };
static const kmedia_type BMP = { "image/bmp", "image", KL_MEDIA_IMAGE_MAX };
static const kmedia_type MP4 = { "video/mp4", "video", KL_MEDIA_VIDEO_MAX };
static const kmedia_type MOV = { "video/quicktime", "video", KL_MEDIA_VIDEO_MAX };
static const kmedia_type WEBM = { "video/webm", "video", KL_MEDIA_VIDEO_MAX };
static const kmedia_type MP3 = { "audio/mpeg", "audio", KL_MEDIA_AUDIO_MAX };
static const kmedia_type WAV = { "audio/wav", "audio", KL_MEDIA_AUDIO_MAX };
static const kmedia_type OGG = { "audio/ogg", "audio", KL_MEDIA_AUDIO_MAX };
static const kmedia_type FLAC = { "audio/flac", "audio", KL_MEDIA_AUDIO_MAX };
static const kmedia_type M4A = { "audio/mp4", "audio", KL_MEDIA_AUDIO_MAX };

static int at(const unsigned char *h, size_t n, size_t off, const char *magic, size_t len) {
  return n >= off + len && memcmp(h + off, magic, len) == 0;
}

const kmedia_type *kmedia_sniff(const unsigned char *h, size_t n) {
  if (at(h, n, 0, "\x89PNG\r\n\x1a\n", 8)) return &PNG;
  if (at(h, n, 0, "\xff\xd8\xff", 3)) return &JPEG;
  if (at(h, n, 0, "GIF87a", 6) || at(h, n, 0, "GIF89a", 6)) return &GIF;
  if (at(h, n, 0, "RIFF", 4) && at(h, n, 8, "WEBP", 4)) return &WEBP;
  if (at(h, n, 0, "RIFF", 4) && at(h, n, 8, "WAVE", 4)) return &WAV;
  if (at(h, n, 0, "BM", 2) && n >= 14) return &BMP;
  if (at(h, n, 4, "ftyp", 4)) {
    if (at(h, n, 8, "qt  ", 4)) return &MOV;
    if (at(h, n, 8, "M4A ", 4)) return &M4A;
    return n >= 12 ? &MP4 : NULL;
  }
  if (at(h, n, 0, "\x1a\x45\xdf\xa3", 4)) return &WEBM;
  if (at(h, n, 0, "OggS", 4)) return &OGG;
  if (at(h, n, 0, "fLaC", 4)) return &FLAC;
  if (at(h, n, 0, "ID3", 3) || (n >= 2 && h[0] == 0xff && (h[1] & 0xe0) == 0xe0)) return &MP3;
  return NULL;
}

size_t kmedia_b64_len(size_t n) {
  return (n / 3 + (n % 3 != 0)) * 4;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t kmedia_b64(const unsigned char *in, size_t n, char *out) {
  size_t i = 0, o = 0;
  for (; i + 3 <= n; i += 3) {
    unsigned long v = ((unsigned long)in[i] << 16) | ((unsigned long)in[i + 1] << 8) | in[i + 2];
    out[o++] = B64[(v >> 18) & 63];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = B64[(v >> 6) & 63];
    out[o++] = B64[v & 63];
  }
  if (i < n) {
    unsigned long v = (unsigned long)in[i] << 16;
    if (i + 1 < n) v |= (unsigned long)in[i + 1] << 8;
    out[o++] = B64[(v >> 18) & 63];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  return o;
}
