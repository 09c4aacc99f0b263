"""The compose topology rebuilt without a container engine, for tests/test_production_drill.py:
hosts are network namespaces on a bridge (network.py), each service a process in its own mount
namespace as the image's user (service.py), configured from `docker compose config` (compose.py);
the data host's servers (data.py), the published port (forwarder.py), and the whole, started in
compose's order and torn down whatever happens (topology.py)."""
