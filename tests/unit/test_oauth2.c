/* test_oauth2: the pure parts of the OAuth2 client (proto/oauth2.h,
 * CONTRACT §4a): the grant's form body (client credentials, refresh
 * token, form encoding) and the token endpoint's JSON answer (success,
 * defaults, error answers, bad answers; no secret in a reason). */
#include "proto/oauth2.h"

#include "check.h"

static void test_form(void) {
  char out[512];
  struct oauth2_grant cc = {.client_id = "app-1",
                            .client_secret = "s3cr&t=+ /x",
                            .scope = "https://outlook.office365.com/.default"};
  size_t n = oauth2_form(&cc, out, sizeof out);
  CHECK_STR(out, "grant_type=client_credentials&client_id=app-1"
                 "&client_secret=s3cr%26t%3D%2B+%2Fx"
                 "&scope=https%3A%2F%2Foutlook.office365.com%2F.default");
  CHECK_INT(n, strlen(out));
  struct oauth2_grant rt = {.client_id = "cid.apps.googleusercontent.com",
                            .client_secret = "sec",
                            .refresh_token = "1//0g-AbC_d"};
  oauth2_form(&rt, out, sizeof out);
  CHECK_STR(out, "grant_type=refresh_token&refresh_token=1%2F%2F0g-AbC_d"
                 "&client_id=cid.apps.googleusercontent.com&client_secret=sec");
  /* Cut like snprintf: the length it needs, a terminated prefix. */
  char small[10];
  n = oauth2_form(&rt, small, sizeof small);
  CHECK(n > sizeof small);
  CHECK_STR(small, "grant_typ");
  CHECK_INT(oauth2_form(&rt, NULL, 0), n);
  /* Bytes outside ASCII are %XX. */
  struct oauth2_grant u = {.client_id = "\xc3\xa9"};
  oauth2_form(&u, out, sizeof out);
  CHECK_STR(out, "grant_type=client_credentials&client_id=%C3%A9");
}

static int parse(int st, const char *body, struct oauth2_token *t, char *why) {
  return oauth2_parse_token(st, body, strlen(body), t, why, 512);
}

static void test_answer(void) {
  static struct oauth2_token t;
  char why[512];
  CHECK_INT(parse(200,
                  "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                  "\"ext_expires_in\":3599,\"access_token\":\"eyJ0.a-b_c\"}",
                  &t, why),
            0);
  CHECK_STR(t.access_token, "eyJ0.a-b_c");
  CHECK_INT(t.expires_in, 3599);
  /* Google: lower-case type, scope; expires_in as a string elsewhere. */
  CHECK_INT(parse(200,
                  "{\"access_token\":\"ya29.x\",\"expires_in\":\"120\","
                  "\"scope\":\"https://mail.google.com/\","
                  "\"token_type\":\"bearer\"}",
                  &t, why),
            0);
  CHECK_INT(t.expires_in, 120);
  /* No expires_in: the default; 0 is kept (used once, then refetched). */
  CHECK_INT(parse(200, "{\"access_token\":\"t\"}", &t, why), 0);
  CHECK_INT(t.expires_in, OAUTH2_DEFAULT_EXPIRES);
  CHECK_INT(parse(200, "{\"access_token\":\"t\",\"expires_in\":0}", &t, why),
            0);
  CHECK_INT(t.expires_in, 0);
  CHECK_INT(parse(200, "{\"access_token\":\"t\",\"expires_in\":59.5}", &t, why),
            0);
  CHECK_INT(t.expires_in, 59);

  /* Error answers: the endpoint's error and description, no token. */
  CHECK_INT(parse(400,
                  "{\"error\":\"invalid_grant\",\"error_description\":"
                  "\"Token has been expired or revoked.\"}",
                  &t, why),
            -1);
  CHECK_STR(why, "HTTP 400: invalid_grant: Token has been expired or "
                 "revoked.");
  CHECK_STR(t.access_token, "");
  CHECK_INT(parse(401, "{\"error\":\"invalid_client\"}", &t, why), -1);
  CHECK_STR(why, "HTTP 401: invalid_client");
  CHECK_INT(parse(500, "<html>oops</html>", &t, why), -1);
  CHECK_STR(why, "HTTP 500: the answer is not a JSON object");
  /* An error with status 200 is an error; a token on a 4xx is not used. */
  CHECK_INT(parse(200, "{\"error\":\"x\",\"access_token\":\"leak\"}", &t, why),
            -1);
  CHECK(!strstr(why, "leak"));
  CHECK_INT(parse(403, "{\"access_token\":\"leak2\"}", &t, why), -1);
  CHECK_STR(why, "HTTP 403");
  /* Control bytes in the description are replaced. */
  CHECK_INT(parse(400, "{\"error\":\"a\\nb\"}", &t, why), -1);
  CHECK_STR(why, "HTTP 400: a?b");

  /* Bad answers. */
  CHECK_INT(parse(200, "[]", &t, why), -1);
  CHECK_INT(parse(200, "{}", &t, why), -1);
  CHECK_STR(why, "no access_token in the answer");
  CHECK_INT(parse(200, "{\"access_token\":\"\"}", &t, why), -1);
  CHECK_INT(parse(200, "{\"access_token\":42}", &t, why), -1);
  CHECK_INT(parse(200, "{\"access_token\":\"a b\"}", &t, why), -1);
  CHECK_CONTAINS(why, "not printable");
  CHECK_INT(parse(200, "{\"access_token\":\"a\\u0001\"}", &t, why), -1);
  CHECK_INT(
      parse(200, "{\"access_token\":\"t\",\"token_type\":\"mac\"}", &t, why),
      -1);
  CHECK_STR(why, "token_type 'mac' is not Bearer");
  CHECK_INT(parse(200, "{\"access_token\":\"t\",\"expires_in\":-1}", &t, why),
            -1);
  CHECK_INT(
      parse(200, "{\"access_token\":\"t\",\"expires_in\":\"1h\"}", &t, why),
      -1);
  CHECK_INT(
      parse(200, "{\"access_token\":\"t\",\"access_token\":\"u\"}", &t, why),
      -1);
  /* Sizes: the longest token fits, one more byte does not. */
  size_t cap = OAUTH2_TOKEN_MAX + 64;
  char *big = malloc(cap);
  snprintf(big, cap, "{\"access_token\":\"%0*d\"}", OAUTH2_TOKEN_MAX, 7);
  CHECK_INT(parse(200, big, &t, why), 0);
  CHECK_INT(strlen(t.access_token), OAUTH2_TOKEN_MAX);
  snprintf(big, cap, "{\"access_token\":\"%0*d\"}", OAUTH2_TOKEN_MAX + 1, 7);
  CHECK_INT(parse(200, big, &t, why), -1);
  CHECK_CONTAINS(why, "longer than");
  free(big);
  char *huge = calloc(1, OAUTH2_ANSWER_MAX + 2);
  memset(huge, ' ', OAUTH2_ANSWER_MAX + 1);
  CHECK_INT(
      oauth2_parse_token(200, huge, OAUTH2_ANSWER_MAX + 1, &t, why, sizeof why),
      -1);
  CHECK_CONTAINS(why, "larger than");
  free(huge);
  /* Not NUL-terminated input: only len bytes are read. */
  const char *two = "{\"access_token\":\"t1\"}{\"access_token\":\"t2\"}";
  CHECK_INT(oauth2_parse_token(200, two, 21, &t, why, sizeof why), 0);
  CHECK_STR(t.access_token, "t1");
}

int main(void) {
  test_form();
  test_answer();
  return check_result("test_oauth2");
}
