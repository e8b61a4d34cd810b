"""Seeds per trial: a hash of (`sampler.seed`, variant, trial number, purpose).

- two workers asking at the same instant never share a random state: Optuna gives every
  ask its own trial number (the storage assigns it when it creates the trial);
- a new variant of the same study draws other points than the previous one;
- a rerun of a variant's trial number with the same history repeats its point.

The sampler side lives in `hpoq.core.seeded_sampler` (it imports Optuna); this module
stays import-free for the objectives that seed their training from the same inputs.
"""

from __future__ import annotations

import hashlib

from hpoq.core.fingerprints import canonical_json

SAMPLER = "sampler"
TRAINING = "training"


def trial_seed(seed: int, variant: int, trial_number: int, purpose: str = SAMPLER) -> int:
    """A 32-bit seed from the first four bytes of sha256 over the canonical JSON of the
    inputs: unrelated for neighbouring inputs, identical for identical ones."""
    payload = {"seed": seed, "variant": variant, "trial": trial_number, "purpose": purpose}
    digest = hashlib.sha256(canonical_json(payload).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")
