"""Switches for the costlier contracts (see docs/contracts.md).

Three levels, from cheap to expensive:

* always on: a contract whose condition costs about as much as the function;
* ``icontract.SLOW`` (``ICONTRACT_SLOW=1``): contracts that rescan, re-parse or re-hash;
* :data:`PER_ROW` (also ``SYNCREF_PER_ROW_CONTRACTS=1``): contracts on functions called per row,
  per string or per grant (``Comparison.holds``, ``grant_matches``, ...).  Their conditions are
  trivial; the call overhead of the contract is not.  CrossHair runs with them on;
* :data:`WHOLE_STATE` (also ``SYNCREF_WHOLE_STATE_CONTRACTS=1``): every state and transition
  invariant around every committed reducer call -- what the stateful machines already check after
  every step.

icontract reads the switches when a module is imported: set them before importing ``spec``.
"""

from __future__ import annotations

import os

import icontract

SLOW: bool = icontract.SLOW
PER_ROW: bool = SLOW and bool(os.environ.get("SYNCREF_PER_ROW_CONTRACTS"))
WHOLE_STATE: bool = SLOW and bool(os.environ.get("SYNCREF_WHOLE_STATE_CONTRACTS"))
