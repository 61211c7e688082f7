"""The remote MX for the queue tests: aiosmtpd on a loopback port that records every message.

Usage: sink.py OUT_FILE [--tls CERT KEY] [--auth USER:PASSWORD]
Prints the port it listens on, then serves until killed. Each accepted message is one JSON
line in OUT_FILE: mail_from, rcpt_tos, data (latin-1 text of the raw bytes), tls, auth.
Recipients steer the replies by their local part: `perm...` gets 550 5.1.1 at RCPT;
`tempN-...` gets 451 4.3.0 for its first N RCPTs (per address), then 250.
"""
import asyncio
import collections
import json
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult

out_path = sys.argv[1]
args = sys.argv[2:]
tls_context = None
credentials = None
while args:
    if args[0] == "--tls":
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args[1], args[2])
        args = args[3:]
    elif args[0] == "--auth":
        credentials = args[1].split(":", 1)
        args = args[2:]
    else:
        sys.exit("unknown argument " + args[0])

rcpt_counts = collections.Counter()
out = open(out_path, "a", encoding="utf-8")


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("perm"):
            return "550 5.1.1 no such user here"
        if local.startswith("temp"):
            digits = "".join(c for c in local[4:] if c.isdigit())
            failures = int(digits) if digits else 1
            rcpt_counts[address] += 1
            if rcpt_counts[address] <= failures:
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("latin-1"),
            "tls": session.ssl is not None,
            "auth": bool(getattr(session, "authenticated", False)),
        }
        out.write(json.dumps(record) + "\n")
        out.flush()
        return "250 2.0.0 queued"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        credentials is not None
        and auth_data.login.decode() == credentials[0]
        and auth_data.password.decode() == credentials[1]
    )
    return AuthResult(success=ok)


def factory():
    kwargs = dict(hostname="sink.test", enable_SMTPUTF8=True, decode_data=False)
    if tls_context is not None:
        kwargs["tls_context"] = tls_context
    if credentials is not None:
        kwargs.update(
            authenticator=authenticator, auth_required=True, auth_require_tls=True
        )
    return SMTP(Handler(), **kwargs)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
