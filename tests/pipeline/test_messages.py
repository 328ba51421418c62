"""Messages: secrets redacted, endpoints kept, no colour codes off a terminal."""
import io

from pipeline.storage import for_terminal, redact

OPTIONS = {"endpoint_url": "http://127.0.0.1:9000", "key": "AKIAFAKE1234", "region_name": "us-east-1",
           "client_kwargs": {"aws_session_token": "tok-SECRET-99"}, "password": "hunter22"}


def test_secrets_redacted_endpoint_kept():
    text = "PUT http://127.0.0.1:9000/b failed for AKIAFAKE1234 with tok-SECRET-99 / hunter22 in us-east-1"
    out = redact(text, OPTIONS)
    assert out == "PUT http://127.0.0.1:9000/b failed for *** with *** / *** in us-east-1"


def test_no_ansi_codes_off_a_terminal():
    coloured = "\x1b[36mray::MapWorker\x1b[39m failed: \x1b[1;31mboom\x1b[0m AKIAFAKE1234"

    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert for_terminal(coloured, OPTIONS, io.StringIO()) == "ray::MapWorker failed: boom ***"
    assert "\x1b[36m" in for_terminal(coloured, OPTIONS, Tty())
