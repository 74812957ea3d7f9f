"""free_port: the ports a test starts its daemons on must differ from each other."""
import socket

from stack.processes import free_port


def test_free_port_never_hands_out_the_same_port_twice_in_a_process():
    # bind(0) picks among ~28k ephemeral ports; 500 draws repeat one with probability ~0.99,
    # which is how a broker once got its frontend and backend on the same port.
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
