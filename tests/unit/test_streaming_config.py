"""The streaming server's flags: loopback on an ephemeral port by default, TLS in pairs (client CAs only with TLS), positive timeouts."""

from __future__ import annotations

import pytest

from dockershim_py import config


def test_defaults() -> None:
    settings = config.from_args([])
    assert settings.streaming_bind_addr == "127.0.0.1:0"
    assert (settings.streaming_tls_cert, settings.streaming_tls_key, settings.streaming_tls_client_ca) == ("", "", "")
    assert settings.streaming_idle_timeout == 4 * 3600
    assert settings.streaming_creation_timeout == 30


def test_flags() -> None:
    settings = config.from_args(["--streaming-bind-addr", "[::1]:10010", "--streaming-tls-cert", "c.pem",
                                 "--streaming-tls-key", "k.pem", "--streaming-tls-client-ca", "ca.pem",
                                 "--streaming-connection-idle-timeout", "5m", "--streaming-creation-timeout", "10s"])
    assert settings.streaming_tls_client_ca == "ca.pem"
    assert config.parse_bind_address(settings.streaming_bind_addr) == ("::1", 10010)
    assert (settings.streaming_idle_timeout, settings.streaming_creation_timeout) == (300, 10)


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1", ("127.0.0.1", 0)), ("0.0.0.0:8080", ("0.0.0.0", 8080)), ("[::]:0", ("::", 0)),
    ("[fe80::1]", ("fe80::1", 0)), ("::1", ("::1", 0)),
])
def test_bind_addresses(text: str, parsed: tuple[str, int]) -> None:
    assert config.parse_bind_address(text) == parsed


@pytest.mark.parametrize("text", ["localhost:80", "127.0.0.1:99999", "[::1", "[::1]x", "1.2.3.4:port", ""])
def test_bad_bind_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        config.parse_bind_address(text)


@pytest.mark.parametrize("argv", [
    ["--streaming-tls-cert", "c.pem"], ["--streaming-tls-key", "k.pem"], ["--streaming-tls-client-ca", "ca.pem"],
    ["--streaming-connection-idle-timeout", "0"], ["--streaming-creation-timeout", "0s"],
    ["--streaming-bind-addr", "example.com:1"],
])
def test_bad_flags_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        config.from_args(argv)
