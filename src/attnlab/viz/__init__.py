"""Pictures people read: attention capture, maps (PNG), the head view (HTML), training curves.

Only the torch-side pieces are imported here; `attnlab.viz.maps`, `attnlab.viz.headview` and
`attnlab.viz.curves` (matplotlib) are imported where they are used.
"""

from attnlab.viz.capture import AttentionCapture, AttentionRecord, capture_attention
from attnlab.viz.heads import head_scores, induction_score, previous_token_score
from attnlab.viz.rollout import attention_rollout

__all__ = [
    "AttentionCapture",
    "AttentionRecord",
    "attention_rollout",
    "capture_attention",
    "head_scores",
    "induction_score",
    "previous_token_score",
]
