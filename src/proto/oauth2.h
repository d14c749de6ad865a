/*
 * proto/oauth2: the pure parts of mailhop's OAuth2 client (CONTRACT §4a):
 * the token request's form body (RFC 6749 §4.4 client credentials, §6
 * refresh token; application/x-www-form-urlencoded as in the HTML spec)
 * and the token endpoint's JSON answer (RFC 6749 §5.1 / §5.2), parsed with
 * jansson.  No I/O; relay/oauth2 does the HTTPS.
 *
 * Secrets (client secret, refresh token, access token) pass through these
 * functions but never into an error message.
 */
#ifndef MAILHOP_PROTO_OAUTH2_H
#define MAILHOP_PROTO_OAUTH2_H

#include <stddef.h>
#include <stdint.h>

#define OAUTH2_TOKEN_MAX 8192   /* bytes of an access token, NUL excluded */
#define OAUTH2_ANSWER_MAX 65536 /* bytes of a token endpoint's answer */
#define OAUTH2_DEFAULT_EXPIRES                                                 \
  3600 /* s, when the answer gives no expires_in                               \
        */

/* What a grant sends; NULL or "" leaves a field out. */
struct oauth2_grant {
  const char *client_id;
  const char *client_secret;
  const char *refresh_token; /* set: refresh-token grant, else client
                                credentials */
  const char *scope;
};

/*
 * Writes the form body of the grant into out (NUL-terminated when cap > 0).
 * Returns the length it needs in bytes without the NUL, as snprintf: the
 * body is complete only when the result is < cap.  The body holds
 * secrets: the caller wipes it.
 */
size_t oauth2_form(const struct oauth2_grant *g, char *out, size_t cap);

struct oauth2_token {
  char access_token[OAUTH2_TOKEN_MAX + 1];
  uint64_t expires_in; /* s; OAUTH2_DEFAULT_EXPIRES when not given */
};

/*
 * Parses a token endpoint's answer (body of len bytes, not NUL-terminated)
 * with its HTTP status.  Returns 0 with *out filled (status 200, a JSON
 * object with a string access_token of printable ASCII up to
 * OAUTH2_TOKEN_MAX bytes, token_type Bearer when given, expires_in a
 * non-negative number or numeric string when given), or -1 with a reason
 * in why: the endpoint's "error" and "error_description" (cut, with
 * non-printable bytes replaced) for an error answer, else what is wrong.
 * The reason never holds the token.  *out is wiped on -1.
 */
int oauth2_parse_token(int http_status, const char *body, size_t len,
                       struct oauth2_token *out, char *why, size_t whylen);

#endif
