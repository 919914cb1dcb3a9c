"""MoQ over QUIC (moq-lite-03/04) with aioquic: the wire codec (`wire`), the sans-I/O session
(`session`), the publisher half serving the model (`publisher`), the aioquic adapter for raw
QUIC and WebTransport (`transport`, `webtransport`) and the embedding API (`server`).

The MoQ edge meets the SRT edge only in the model (`model.Origin`).
"""
