/*
 * curlcompat.h - libcurl from 7.68.0 on (Ubuntu 20.04): what kling uses of
 * newer versions, behind LIBCURL_VERSION_NUM, with the older equivalent.
 *
 *   CURLOPT_PROTOCOLS_STR (7.85)  CURLOPT_PROTOCOLS, a bitmask (deprecated
 *                                 from 7.85 on, so used only before it)
 *   CURLE_PROXY (7.73)            before it, a proxy's refusal shows as
 *                                 CURLE_COULDNT_RESOLVE_PROXY or the
 *                                 CONNECT answer's code (proxy_status)
 *   CURLINFO_CAINFO (7.84)        before it, libcurl's default bundle is not
 *                                 known: its CA directory stays set unless
 *                                 ca_file is given (net.c; TLS costs more)
 *
 * -DKLING_FORCE_CURL_7_68 (with -DCURL_DISABLE_DEPRECATION) takes the old
 * branches on a newer libcurl: `make curl768` builds so, to prove they compile
 * and run. Every other option and code kling uses is in 7.68.
 */
#ifndef KLING_CURLCOMPAT_H
#define KLING_CURLCOMPAT_H

#include <curl/curl.h>

#define KL_CURL_MIN_TEXT "7.68.0"
#if LIBCURL_VERSION_NUM < 0x074400
#error "kling needs libcurl 7.68.0 or newer (curl/curl.h says LIBCURL_VERSION)"
#endif

#if LIBCURL_VERSION_NUM >= 0x075500 && !defined(KLING_FORCE_CURL_7_68)
#define KL_SET_HTTP_ONLY(easy) curl_easy_setopt((easy), CURLOPT_PROTOCOLS_STR, "http,https")
#else
#define KL_SET_HTTP_ONLY(easy) curl_easy_setopt((easy), CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS))
#endif

#if LIBCURL_VERSION_NUM >= 0x074900 && !defined(KLING_FORCE_CURL_7_68)
#define KL_IS_CURLE_PROXY(code) ((code) == CURLE_PROXY)
#else
#define KL_IS_CURLE_PROXY(code) ((void)(code), 0)
#endif

#endif
