"""Hold a TCP handshake half-open, and count the half-open ones: for the
tests of stopping accepting (tests/test_race.py; lesson steps A1 and A2)
and the fixture's listener (tests/gracecheck_fixtures/flawed_server.py).

The code is gracecheck's (its handshake check), which is one file by
design; this only makes it importable from here.  Linux.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gracecheck"))
from gracecheck import (attach_drop_syn, connect_half_open, let_in,  # noqa: E402
                        syn_recv_count)

__all__ = ["attach_drop_syn", "connect_half_open", "let_in", "syn_recv_count"]
