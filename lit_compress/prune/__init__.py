"""Pruning: unstructured masks with schedules (GradualPruning, LotteryTicket), structured pruning of heads, FFN
channels and hidden width (StructuredPruning) and of CNN channels (ChannelPruning)."""

from lit_compress.prune.callback import GradualPruning
from lit_compress.prune.channel_callback import ChannelPruning
from lit_compress.prune.channels import (
    ChannelPruningReport,
    ElementRemap,
    channel_groups,
    prune_channels,
    remap_optimizer_elements,
)
from lit_compress.prune.functional import (
    SerializedSize,
    SparsityReport,
    apply_masks,
    compute_masks,
    effective_parameters,
    encoder_linear_filter,
    global_l1_unstructured,
    global_masks,
    ln_structured,
    local_masks,
    model_sparsity,
    module_filter,
    select_parameters,
    serialized_size,
    sparsity_report,
    strip_pruning,
    stripped_state_dict,
)
from lit_compress.prune.hidden import hidden_importance, hidden_width, kept_hidden_width, prune_hidden
from lit_compress.prune.lottery import LotteryTicket
from lit_compress.prune.schedules import (
    ConstantSparsity,
    IterativeSparsity,
    LinearSparsity,
    PolynomialDecay,
    SparsitySchedule,
)
from lit_compress.prune.scoring import magnitude_scores, movement_update, random_scores
from lit_compress.models.architecture import (
    ArchitectureSpec,
    apply_architecture,
    architecture_from_state_dict,
    current_architecture,
    read_architecture,
)
from lit_compress.prune.structured import (
    StructuredPruningResult,
    UnitScores,
    prune_heads_and_ffn,
    remap_optimizer_state,
    select_units,
    structured_magnitude_scores,
    structured_taylor_scores,
)
from lit_compress.prune.structured_callback import StructuredPruning
from lit_compress.prune.vocab import (
    VocabTrimReport,
    close_token_ids,
    corpus_token_counts,
    kept_token_ids,
    remap_input_ids,
    trim_tokenizer,
    trim_vocabulary,
)
