/*
 * dkim_cmd: `mailhop dkim keygen DOMAIN SELECTOR [--type rsa|ed25519]
 * [--bits N] [--out FILE]` (CONTRACT §1, §3a).
 *
 * Writes a new signing key as PEM (PKCS#8), mode 0600, to --out or
 * DOMAIN.SELECTOR.key in the current directory — never over an existing
 * file — and prints its DNS record as one zone-file line,
 * `SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; k=...; p=..."`, with the
 * text split into strings of at most 255 octets (RFC 1035 §3.3.14).
 * RSA keys are 2048 bits unless --bits says otherwise (1024 to 8192;
 * under 2048 a warning); Ed25519 public keys are published raw (RFC 8463
 * §4).
 */
#ifndef MAILHOP_CMD_DKIM_CMD_H
#define MAILHOP_CMD_DKIM_CMD_H

/* argv[0] is "dkim".  Returns the exit code: 0 done, 1 usage error or the
 * file exists, 2 key generation or writing failed. */
int dkim_cmd_main(int argc, char **argv);

#endif
