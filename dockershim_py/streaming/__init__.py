"""The streaming server's protocol cores: exec, attach and port-forward sessions as data.

Every module here is sans-IO (bytes in, events out; no sockets, threads or clocks), so the
server that wires them to sockets and to Docker stays thin and the protocols are unit-tested:

- `negotiation`: which transport and subprotocol an upgrade request gets, or how to refuse it.
- `spdy`: SPDY/3.1 frames and session state (kubectl's and crictl's default transport).
- `channels`: the channel.k8s.io framing, the remote command and port-forward conventions
  (stream types, error-stream Status JSON, resize messages, port prefixes).
- `websocket`: a WebSocket session on wsproto that speaks channels or tunnels SPDY.
"""
