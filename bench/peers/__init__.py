"""Peers the benchmark compares against: the seed's direct publisher, a polling relay, sockjs-node."""
