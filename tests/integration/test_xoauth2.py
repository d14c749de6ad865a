"""SASL XOAUTH2 to a relayhost (issue 15, first part; CONTRACT §4a), with
the token given as relayhost_password: an aiosmtpd smarthost over verified
STARTTLS that implements AUTH XOAUTH2, checks the exact initial response,
answers a bad token with the error challenge and records what it got."""
import base64
import json

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import free_port
from test_tls import (dns, finish, pki, queue_json, relay_conf,  # noqa: F401
                      submit, wait_deferred, wait_until)

GOOD = "ya29.good-token-Zm9vYmFy"
BAD = "ya29.expired-token"
CHALLENGE = {"status": "401", "schemes": "bearer",
             "scope": "https://mail.google.com/"}


class XOAuth2Host:
    def __init__(self):
        self.messages = []
        self.initial = []    # decoded initial responses
        self.after_err = []  # what came after the error challenge

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope, session.ssl is not None,
                              session.authenticated))
        return "250 2.0.0 OK"

    async def auth_XOAUTH2(self, server, args):
        ir = base64.b64decode(args[1]) if len(args) > 1 else b""
        self.initial.append(ir)
        if ir == ("user=relayuser\x01auth=Bearer " + GOOD +
                  "\x01\x01").encode():
            return AuthResult(success=True)
        resp = await server.challenge_auth(json.dumps(CHALLENGE))
        self.after_err.append(resp)
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not "
                                  "accepted")


def xoauth2_host(pki):
    h = XOAuth2Host()
    c = Controller(h, hostname="127.0.0.1", port=free_port(),
                   tls_context=pki.server_ctx("server"),
                   require_starttls=True, auth_required=True)
    c.start()
    h.controller = c
    h.port = c.port
    return h


def test_xoauth2_token_accepted(mailhop, pki, dns):
    sh = xoauth2_host(pki)
    try:
        m = mailhop(**relay_conf(pki, dns, sh.port, relayhost_auth="xoauth2",
                                 relayhost_password=GOOD))
        submit(m)
        wait_until(lambda: sh.messages)
        env, was_tls, authed = sh.messages[0]
        assert was_tls and authed
        assert sh.initial == [("user=relayuser\x01auth=Bearer " + GOOD +
                               "\x01\x01").encode()]
        assert sh.after_err == []
        wait_until(lambda: queue_json(m) == [])
        m.wait_log("event=delivered")
        assert GOOD not in m.log()
        finish(m)
    finally:
        sh.controller.stop()


def test_xoauth2_bad_token_error_challenge_defers(mailhop, pki, dns):
    sh = xoauth2_host(pki)
    try:
        m = mailhop(**relay_conf(pki, dns, sh.port, relayhost_auth="xoauth2",
                                 relayhost_password=BAD))
        submit(m)
        rcpt = wait_deferred(m)
        # The error challenge was answered with an empty line, the 535
        # that followed is the recorded error, and the mail waits (a
        # relayhost problem never bounces).
        assert sh.after_err == [b""]
        assert "535" in rcpt["last_error"], rcpt
        assert sh.messages == []
        assert "event=bounced" not in m.log()
        assert BAD not in m.log() and BAD not in json.dumps(queue_json(m))
        finish(m)
    finally:
        sh.controller.stop()
