"""A TCP port on 127.0.0.1 that nothing listens on now: where a one-node group or a loopback server meets."""
import socket


def free_port():
    """The OS's pick: a port another process may still take before ours binds it, which on one node a run can
    accept (its processes start together, and a clash fails at once, not silently)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
