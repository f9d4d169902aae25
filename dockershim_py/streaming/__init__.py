"""The streaming server: exec, attach and port-forward over SPDY/3.1 and WebSocket.

The protocol cores are sans-IO (bytes in, events out; no sockets, threads or clocks), so the
parts that wire them to sockets and to Docker stay thin and the protocols are unit-tested:

- `negotiation`: which transport and subprotocol an upgrade request gets, or how to refuse it.
- `spdy`: SPDY/3.1 frames and session state (kubectl's and crictl's default transport).
- `channels`: the channel.k8s.io framing, the remote command and port-forward conventions
  (stream types, error-stream Status JSON, resize messages, port prefixes).
- `websocket`: a WebSocket session on wsproto that speaks channels or tunnels SPDY.
- `remotecommand`, `portforward`: the kubelet's session rules over either transport
  (`SpdyStreams`, `WebSocketStreams`, `SpdyForwards`, `WebSocketForwards`), and the sessions
  that join them to Docker processes and pod connections.

The wiring:

- `server`: the RPCs' checks and URLs, the listener, routing, token lookup and upgrades.
- `tokens`: single-use, expiring tokens in a bounded cache.
- `loop`: one selector loop per connection, with backpressure, timers and TLS.
- `runtime`: the Docker side (exec, attach, resize, exit codes, the sandbox's namespace).
"""
