/*
 * dns/idna: internationalized domain names, A-labels and U-labels (see
 * idna.h).
 */
#include "dns/idna.h"

#include <errno.h>
#include <string.h>

#include <idn2.h>

#include "dns/dns_answer.h"

int idna_to_utf8(const char *in, char *out, size_t cap) {
  char ascii[DNS_NAME_MAX + 2];
  if (dns_name_normalize(in, ascii, sizeof ascii) != 0)
    return -EINVAL;
  char *u = NULL;
  if (idn2_to_unicode_8z8z(ascii, &u, 0) != IDN2_OK)
    return -EINVAL;
  /* libidn2 decodes any Punycode ("xn--a" gives U+0080): only a name
   * that converts back to the same A-labels is a valid U-label form. */
  char back[DNS_NAME_MAX + 2];
  int rc = strlen(u) < cap && idna_to_ascii(u, back, sizeof back) == 0 &&
                   strcmp(back, ascii) == 0
               ? 0
               : -EINVAL;
  if (rc == 0)
    memcpy(out, u, strlen(u) + 1);
  idn2_free(u);
  return rc;
}

int idna_to_ascii(const char *in, char *out, size_t cap) {
  int ascii = 1;
  for (const char *p = in; *p; p++)
    if ((unsigned char)*p >= 0x80)
      ascii = 0;
  if (ascii)
    return dns_name_normalize(in, out, cap);
  char *a = NULL;
  /* IDNA2008 with UTS #46 mapping (lower-casing, NFC), non-transitional as
   * browsers and Postfix's smtputf8 do. */
  if (idn2_to_ascii_8z(in, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) !=
      IDN2_OK)
    return -EINVAL;
  int rc = dns_name_normalize(a, out, cap);
  idn2_free(a);
  return rc;
}
