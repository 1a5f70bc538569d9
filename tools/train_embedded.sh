#!/bin/sh
# The recipe of the shipped default backbone (`embedded`: nbseg's ViT-Tiny/8, weakly supervised by the world's
# captions, not DINO), every stage as it ran. Each stage warm-starts from the previous stage's run folder (its final
# checkpoint: the student's ViT and tag heads). Rerun the script after an interruption: every stage resumes where it
# stopped and a finished one returns at once. About 4 h on 2 CPU cores (a GPU: EXTRA=device=cuda).
#
#     sh tools/train_embedded.sh [RUNS_DIR [WORLD_DIR]]     # default runs/embedded, data/world_pretrain
#
# The model card (nbseg/assets/EMBEDDED_MODEL_CARD.md) says what each stage adds and why; the pixel labels are never
# read. Then: nbseg pretrain-tags export RUNS_DIR/stage6_separation OUT.pt --fp16
set -eu
RUNS=${1:-runs/embedded}
WORLD=${2:-data/world_pretrain}
NBSEG=${NBSEG:-nbseg}
EXTRA=${EXTRA:-}               # key=value appended to every stage (they win), e.g. device=cuda
CURVE=${CURVE---curve 100}     # the learning-curve probe at every epoch end (CURVE= turns it off)
[ -f "$WORLD/captions.jsonl" ] || $NBSEG world "$WORLD" --train 10000

stage() {   # stage NAME key=value ...: train or resume RUNS/NAME (a finished run returns at once)
  name=$1; shift
  # shellcheck disable=SC2086
  $NBSEG pretrain-tags "$RUNS/$name" data_root="$WORLD" "$@" $EXTRA $CURVE --no-progress
}

# 1. CLS thing-tag + log-sum-exp pooled patch-tag losses, conv-stem ViT from scratch
stage stage1_tags epochs=6 lr=1e-3 warmup_epochs=0.5 attention_weight=0 checkpoint_every=50
# 2. + the last block's CLS attention taught to follow the patch head's own map of the tagged things
stage stage2_attention init_weights="$RUNS/stage1_tags" epochs=4 lr=5e-4 warmup_epochs=0.3 attention_weight=1
# 3. + patch self-training on the view's own arg-max labels
stage stage3_self_training init_weights="$RUNS/stage2_attention" epochs=4 lr=5e-4 warmup_epochs=0.3 \
  attention_weight=1 self_training_weight=1 self_training_threshold=0.9
# 4. an EMA teacher on the whole image labels the student's crops (nbseg/pretrain/tag_teacher.py)
TEACHER="teacher_momentum=0.99 teacher_keep_fraction=0.5 attention_target_smoothing=0.5 crop_scale=[0.5,1.0]"
# shellcheck disable=SC2086
stage stage4_teacher init_weights="$RUNS/stage3_self_training" epochs=4 lr=5e-4 warmup_epochs=0.3 \
  attention_weight=1 self_training_weight=1 $TEACHER
# 5-6. + the within-image class separation term (DCN's angle pattern), weight 1 for one epoch, then 3 for three
# shellcheck disable=SC2086
stage stage5_separation init_weights="$RUNS/stage4_teacher" epochs=1 lr=3e-4 warmup_epochs=0.2 \
  attention_weight=1 self_training_weight=1 $TEACHER separation_weight=1 separation_temperature=0.1
# shellcheck disable=SC2086
stage stage6_separation init_weights="$RUNS/stage5_separation" epochs=3 lr=3e-4 warmup_epochs=0.2 \
  attention_weight=1 self_training_weight=1 $TEACHER separation_weight=3 separation_temperature=0.1
