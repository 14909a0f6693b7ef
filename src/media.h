/*
 * media.h - local media files as data: URIs (kling.file): the file type from
 * its first bytes (magic numbers), and base64. Pure C: no Lua.
 */
#ifndef KLING_MEDIA_H
#define KLING_MEDIA_H

#include <stddef.h>

typedef struct kmedia_type {
  const char *mime;   /* "image/png", ... */
  const char *kind;   /* "image", "video" or "audio" */
  long max;           /* the largest file of this kind sent (bytes: defaults.h) */
} kmedia_type;

/* The type of a file whose first n bytes (n >= 12 for every type to be
 * told) are head, or NULL when kling does not know it. Known: PNG, JPEG,
 * GIF, WebP, BMP; MP4, QuickTime MOV, WebM/Matroska; MP3, WAV, OGG, FLAC,
 * M4A. */
const kmedia_type *kmedia_sniff(const unsigned char *head, size_t n);

/* Bytes of the base64 text of n bytes (with padding). */
size_t kmedia_b64_len(size_t n);

/* Writes the base64 text of in[0..n) to out (kmedia_b64_len(n) bytes, no NUL);
 * n must be a multiple of 3 except for the last piece of a stream. Returns
 * the bytes written. */
size_t kmedia_b64(const unsigned char *in, size_t n, char *out);

#endif
