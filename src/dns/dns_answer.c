/*
 * dns_answer: query building and answer checking with ldns (pure).
 *
 * Owns nothing beyond the ldns objects it creates and frees within one
 * call.  Must never trust a count, a name or an rdata length from the
 * packet: ldns does the wire parsing (compression pointers, bounds), this
 * file checks what the parsed packet claims.
 */
#include "dns/dns_answer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <ldns/ldns.h>

const char *dns_rcode_name(enum dns_rcode r) {
  switch (r) {
  case DNS_R_OK:
    return "ok";
  case DNS_R_NODATA:
    return "nodata";
  case DNS_R_NXDOMAIN:
    return "nxdomain";
  case DNS_R_CNAME:
    return "cname";
  case DNS_R_TEMPFAIL:
    return "tempfail";
  }
  return "?";
}

static int is_host_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

int dns_name_normalize(const char *in, char *out, size_t cap) {
  size_t n = strlen(in);
  if (n > 0 && in[n - 1] == '.')
    n--;
  if (n == 0 || n > DNS_NAME_MAX || n + 1 > cap)
    return -EINVAL;
  size_t label = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c >= 'A' && c <= 'Z')
      c = (unsigned char)(c - 'A' + 'a');
    if (c == '.') {
      if (label == 0)
        return -EINVAL;
      label = 0;
    } else if (is_host_char(c)) {
      if (++label > 63)
        return -EINVAL;
    } else {
      return -EINVAL;
    }
    out[i] = (char)c;
  }
  out[n] = '\0';
  return 0;
}

int dns_query_build(uint16_t id, const char *name, uint16_t type, uint8_t *buf,
                    size_t cap, size_t *len) {
  ldns_rdf *dname = ldns_dname_new_frm_str(name);
  if (!dname)
    return -EINVAL;
  ldns_pkt *p =
      ldns_pkt_query_new(dname, (ldns_rr_type)type, LDNS_RR_CLASS_IN, LDNS_RD);
  if (!p)
    return -ENOMEM; /* dname is freed by ldns_pkt_query_new on failure */
  ldns_pkt_set_id(p, id);
  ldns_pkt_set_edns_udp_size(p, 1232);
  ldns_pkt_set_edns_do(p, 1); /* RFC 3225: DNSSEC OK */
  ldns_pkt_set_ad(p, 1);      /* RFC 6840 §5.7: tell us about AD */
  uint8_t *wire = NULL;
  size_t size = 0;
  ldns_status st = ldns_pkt2wire(&wire, p, &size);
  ldns_pkt_free(p);
  if (st != LDNS_STATUS_OK)
    return -EINVAL;
  if (size > cap) {
    free(wire);
    return -ENOSPC;
  }
  memcpy(buf, wire, size);
  free(wire);
  *len = size;
  return 0;
}

/* Owner-name equality, case-insensitive (ldns_dname_compare folds case). */
static int same_name(const ldns_rdf *a, const ldns_rdf *b) {
  return a && b && ldns_rdf_get_type(a) == LDNS_RDF_TYPE_DNAME &&
         ldns_rdf_get_type(b) == LDNS_RDF_TYPE_DNAME &&
         ldns_dname_compare(a, b) == 0;
}

/* Presentation form of a dname, lower case, without the final dot ("."
 * stays "."); returns -1 when it does not fit. */
static int dname_to_str(const ldns_rdf *d, char *out, size_t cap) {
  char *s = ldns_rdf2str(d);
  if (!s)
    return -1;
  size_t n = strlen(s);
  if (n > 1 && s[n - 1] == '.')
    n--;
  if (n + 1 > cap) {
    free(s);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  out[n] = '\0';
  free(s);
  return 0;
}

static void set_reason(struct dns_rrset *out, ldns_pkt_rcode rc) {
  switch (rc) {
  case LDNS_RCODE_SERVFAIL:
    snprintf(out->reason, sizeof out->reason, "SERVFAIL");
    break;
  case LDNS_RCODE_REFUSED:
    snprintf(out->reason, sizeof out->reason, "REFUSED");
    break;
  case LDNS_RCODE_FORMERR:
    snprintf(out->reason, sizeof out->reason, "FORMERR");
    break;
  case LDNS_RCODE_NOTIMPL:
    snprintf(out->reason, sizeof out->reason, "NOTIMP");
    break;
  default:
    snprintf(out->reason, sizeof out->reason, "rcode %d", (int)rc);
  }
}

/* RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM). */
static uint32_t negative_ttl(const ldns_pkt *p) {
  const ldns_rr_list *auth = ldns_pkt_authority(p);
  for (size_t i = 0; i < ldns_rr_list_rr_count(auth); i++) {
    const ldns_rr *rr = ldns_rr_list_rr(auth, i);
    if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA || ldns_rr_rd_count(rr) < 7)
      continue;
    const ldns_rdf *min = ldns_rr_rdf(rr, 6);
    if (!min || ldns_rdf_size(min) != 4)
      continue;
    uint32_t ttl = ldns_rr_ttl(rr);
    uint32_t m = ldns_rdf2native_int32(min);
    if (m < ttl)
      ttl = m;
    return ttl > DNS_NEG_TTL_MAX ? DNS_NEG_TTL_MAX : ttl;
  }
  return 0;
}

static int has_soa(const ldns_pkt *p) {
  const ldns_rr_list *auth = ldns_pkt_authority(p);
  for (size_t i = 0; i < ldns_rr_list_rr_count(auth); i++)
    if (ldns_rr_get_type(ldns_rr_list_rr(auth, i)) == LDNS_RR_TYPE_SOA)
      return 1;
  return 0;
}

static void take_rr(struct dns_rrset *out, const ldns_rr *rr, uint16_t type) {
  if (out->n >= DNS_MAX_RR)
    return;
  struct dns_rr *d = &out->rr[out->n];
  memset(d, 0, sizeof *d);
  d->type = type;
  d->ttl = ldns_rr_ttl(rr);
  if (type == DNS_TYPE_A || type == DNS_TYPE_AAAA) {
    size_t want = type == DNS_TYPE_A ? 4 : 16;
    const ldns_rdf *a = ldns_rr_rdf(rr, 0);
    if (ldns_rr_rd_count(rr) != 1 || !a || ldns_rdf_size(a) != want)
      return;
    memcpy(d->addr, ldns_rdf_data(a), want);
  } else if (type == DNS_TYPE_MX) {
    const ldns_rdf *pref = ldns_rr_rdf(rr, 0), *ex = ldns_rr_rdf(rr, 1);
    if (ldns_rr_rd_count(rr) != 2 || !pref || ldns_rdf_size(pref) != 2 || !ex ||
        ldns_rdf_get_type(ex) != LDNS_RDF_TYPE_DNAME)
      return;
    d->pref = ldns_rdf2native_int16(pref);
    if (dname_to_str(ex, d->name, sizeof d->name) != 0)
      return;
  } else if (type == DNS_TYPE_TLSA) {
    /* Kept raw: proto/tlsa.c parses it.  ldns splits the rdata into rdfs
     * (usage, selector, matching type, data); join them again. */
    size_t o = 0, total = 0;
    for (size_t i = 0; i < ldns_rr_rd_count(rr); i++)
      total += ldns_rdf_size(ldns_rr_rdf(rr, i));
    if (total <= DNS_RDATA_MAX) {
      for (size_t i = 0; i < ldns_rr_rd_count(rr); i++) {
        const ldns_rdf *f = ldns_rr_rdf(rr, i);
        memcpy(d->rdata + o, ldns_rdf_data(f), ldns_rdf_size(f));
        o += ldns_rdf_size(f);
      }
      d->rdlen = (uint16_t)o;
    }
  } else if (type == DNS_TYPE_TXT) {
    /* RFC 1035 §3.3.14: one or more <character-string>s, each a length
     * octet and that many bytes; joined without separators (RFC 7208
     * §3.3, RFC 8461 §3.1). */
    size_t o = 0;
    for (size_t k = 0; k < ldns_rr_rd_count(rr); k++) {
      const ldns_rdf *f = ldns_rr_rdf(rr, k);
      if (!f || ldns_rdf_size(f) < 1)
        return;
      const uint8_t *b = ldns_rdf_data(f);
      size_t sl = b[0];
      if (sl + 1 > ldns_rdf_size(f) || o + sl > DNS_TXT_MAX)
        return;
      if (memchr(b + 1, 0, sl))
        return;
      memcpy(d->rdata + o, b + 1, sl);
      o += sl;
    }
    d->rdata[o] = '\0';
    d->rdlen = (uint16_t)o;
  } else {
    return;
  }
  out->n++;
}

enum dns_check dns_answer_parse(const uint8_t *pkt, size_t len, uint16_t id,
                                const char *name, uint16_t type,
                                struct dns_rrset *out) {
  memset(out, 0, sizeof *out);
  out->status = DNS_R_TEMPFAIL;
  /* Cheap checks before parsing: header size, ID, QR bit. */
  if (len < 12 || ((uint16_t)(pkt[0] << 8 | pkt[1])) != id || !(pkt[2] & 0x80))
    return DNS_CHECK_IGNORE;

  ldns_pkt *p = NULL;
  ldns_rdf *qname = ldns_dname_new_frm_str(name);
  if (!qname)
    return DNS_CHECK_IGNORE;
  enum dns_check ret = DNS_CHECK_IGNORE;
  if (ldns_wire2pkt(&p, pkt, len) != LDNS_STATUS_OK)
    goto done;

  /* The question must be ours: one entry, same name, type and class. */
  const ldns_rr_list *q = ldns_pkt_question(p);
  if (ldns_rr_list_rr_count(q) != 1)
    goto done;
  const ldns_rr *qrr = ldns_rr_list_rr(q, 0);
  if (!same_name(ldns_rr_owner(qrr), qname) ||
      ldns_rr_get_type(qrr) != (ldns_rr_type)type ||
      ldns_rr_get_class(qrr) != LDNS_RR_CLASS_IN)
    goto done;
  if (ldns_pkt_get_opcode(p) != LDNS_PACKET_QUERY)
    goto done;
  if (ldns_pkt_tc(p)) {
    ret = DNS_CHECK_TRUNCATED;
    goto done;
  }
  ret = DNS_CHECK_OK;
  out->secure = ldns_pkt_ad(p) ? 1 : 0;

  ldns_pkt_rcode rc = ldns_pkt_get_rcode(p);
  if (rc != LDNS_RCODE_NOERROR && rc != LDNS_RCODE_NXDOMAIN) {
    out->secure = 0;
    set_reason(out, rc);
    goto done;
  }

  /* Follow the CNAME chain inside the answer section, bounded, and take
   * the records of the asked type owned by the chain's last name.  Records
   * for any other owner are ignored (RFC 5452 §6 style in-bailiwick
   * paranoia: we only ever asked about this chain). */
  const ldns_rr_list *ans = ldns_pkt_answer(p);
  size_t nans = ldns_rr_list_rr_count(ans);
  const ldns_rdf *cur = qname;
  uint32_t chain_ttl = UINT32_MAX;
  int links = 0;
  for (;;) {
    const ldns_rr *next = NULL;
    for (size_t i = 0; i < nans; i++) {
      const ldns_rr *rr = ldns_rr_list_rr(ans, i);
      if (ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN ||
          !same_name(ldns_rr_owner(rr), cur))
        continue;
      uint16_t t = (uint16_t)ldns_rr_get_type(rr);
      if (t == type)
        take_rr(out, rr, type);
      else if (t == DNS_TYPE_CNAME && !next && ldns_rr_rd_count(rr) == 1 &&
               ldns_rdf_get_type(ldns_rr_rdf(rr, 0)) == LDNS_RDF_TYPE_DNAME)
        next = rr;
    }
    if (out->n > 0 || !next)
      break;
    if (++links > DNS_CNAME_MAX) {
      snprintf(out->reason, sizeof out->reason, "CNAME chain too long");
      out->status = DNS_R_TEMPFAIL;
      goto done;
    }
    if (ldns_rr_ttl(next) < chain_ttl)
      chain_ttl = ldns_rr_ttl(next);
    cur = ldns_rr_rdf(next, 0);
    if (dname_to_str(cur, out->cname, sizeof out->cname) != 0) {
      snprintf(out->reason, sizeof out->reason, "bad CNAME target");
      out->status = DNS_R_TEMPFAIL;
      goto done;
    }
  }

  if (out->n > 0) {
    uint32_t ttl = chain_ttl;
    for (int i = 0; i < out->n; i++)
      if (out->rr[i].ttl < ttl)
        ttl = out->rr[i].ttl;
    out->ttl = ttl > DNS_TTL_MAX ? DNS_TTL_MAX : ttl;
    out->status = DNS_R_OK;
  } else if (rc == LDNS_RCODE_NXDOMAIN) {
    out->status = DNS_R_NXDOMAIN;
    out->ttl = negative_ttl(p);
  } else if (links > 0 && !has_soa(p)) {
    /* A chain that stops without data and without a negative answer for
     * its end: the server did not follow it, so we ask for the end. */
    out->status = DNS_R_CNAME;
    out->ttl = chain_ttl > DNS_TTL_MAX ? DNS_TTL_MAX : chain_ttl;
  } else {
    out->status = DNS_R_NODATA;
    out->ttl = negative_ttl(p);
  }
  if (out->status != DNS_R_CNAME && links == 0)
    out->cname[0] = '\0';

done:
  ldns_rdf_deep_free(qname);
  ldns_pkt_free(p);
  return ret;
}
