#!/usr/bin/env bash
# The GPU session that trains the embedded backbone candidates (run through the `device` tool from the repo root;
# $OUT is the folder whose files come back). Checks the CUDA paths first (bf16 autocast, NCCL DDP through
# torchrun, peak memory), then runs tools/pretrain_sweep.py on the world with device-side augmentation.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
BUDGET=${BUDGET:-320}
# The sweep runs under `timeout DEADLINE_S` and its output is teed to $OUT, so a call that runs out of device time
# still brings back its logs (the sixth sweep's call was cut at the session's budget and returned nothing).
DEADLINE_S=${DEADLINE_S:-540}
exec > >(tee -a "$OUT/session.log") 2>&1
T0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm, sklearn; print('torch', torch.__version__, 'timm', timm.__version__)"
python3 -m nbseg world --workers 16 > /dev/null || exit 1
# NCCL + DDP + AMP on one GPU, with the iBOT patch loss and device-side views (SKIP_DDP=1 skips it)
if [ -z "${SKIP_DDP:-}" ]; then
python3 -m torch.distributed.run --nproc_per_node 1 -m nbseg pretrain /tmp/ddp device=cuda augment_on=device \
    batch_size=64 epochs=1 max_steps=20 patch_loss_weight=1 num_workers=4 --no-progress 2>&1 | tail -12
fi
if [ "${SWEEP:-2}" = 1 ]; then   # first sweep (2026-11-23): every variant fell into DINO's uniform-teacher collapse
timeout $((DEADLINE_S - (SECONDS - T0))) python3 tools/pretrain_sweep.py /tmp/sweep --budget-s "$BUDGET" \
    --common device=cuda augment_on=device batch_size=256 num_workers=4 blr=0.0005 norm_last_layer=false \
             momentum_teacher=0.996 drop_path_rate=0.1 teacher_temp=0.07 checkpoint_every=1000 log_every=20 \
    --variant dino:hue=0.1 \
    --variant dinohue:hue=0.5,grayscale_p=0.5 \
    --variant ibot:hue=0.5,grayscale_p=0.5,patch_loss_weight=1 \
    --variant ibot96:hue=0.5,grayscale_p=0.5,patch_loss_weight=1,global_size=96,local_size=48
elif [ "${SWEEP:-2}" = 4 ]; then   # fourth sweep: patch distillation across the two global views
timeout $((DEADLINE_S - (SECONDS - T0))) python3 tools/pretrain_sweep.py /tmp/sweep --budget-s "$BUDGET" \
    --common device=cuda augment_on=device batch_size=256 num_workers=4 blr=0.0005 norm_last_layer=true \
             momentum_teacher=0.996 drop_path_rate=0.1 teacher_temp=0.04 warmup_teacher_temp=0.04 \
             checkpoint_every=1000 log_every=20 cross_view_loss_weight=1 \
    --variant xv:hue=0.5,grayscale_p=0.5 \
    --variant xvinit:hue=0.5,grayscale_p=0.5,init_weights=nbseg/assets/embedded_vit_tiny_patch8.pt \
    --variant xvdino:hue=0.1,grayscale_p=0.2
elif [ "${SWEEP:-2}" = 5 ]; then   # fifth sweep: Sinkhorn-Knopp teacher targets and random colour tables
timeout $((DEADLINE_S - (SECONDS - T0))) python3 tools/pretrain_sweep.py /tmp/sweep --budget-s "$BUDGET" \
    --common device=cuda augment_on=device batch_size=256 num_workers=4 blr=0.0005 norm_last_layer=true \
             momentum_teacher=0.996 drop_path_rate=0.1 teacher_temp=0.04 warmup_teacher_temp=0.04 \
             checkpoint_every=1000 log_every=20 \
    --variant sk:teacher_targets=sinkhorn,hue=0.5,grayscale_p=0.5,cross_view_loss_weight=1 \
    --variant sklut:teacher_targets=sinkhorn,colour_lut_p=0.8,cross_view_loss_weight=1 \
    --variant lut:colour_lut_p=0.8,cross_view_loss_weight=1 \
    --variant sklutcls:teacher_targets=sinkhorn,colour_lut_p=0.8
elif [ "${SWEEP:-2}" = 6 ]; then   # sixth sweep: a dense contrastive loss (cannot collapse) beside DINO
timeout $((DEADLINE_S - (SECONDS - T0))) python3 tools/pretrain_sweep.py /tmp/sweep --budget-s "$BUDGET" \
    --common device=cuda augment_on=device batch_size=256 num_workers=4 blr=0.0005 norm_last_layer=true \
             momentum_teacher=0.996 drop_path_rate=0.1 teacher_temp=0.04 warmup_teacher_temp=0.04 \
             checkpoint_every=1000 log_every=20 dense_contrastive_weight=1 \
    --variant nce:hue=0.5,grayscale_p=0.5 \
    --variant ncelut:colour_lut_p=0.8 \
    --variant ncexv:hue=0.5,grayscale_p=0.5,cross_view_loss_weight=1
elif [ "${SWEEP:-2}" = 7 ]; then   # seventh sweep (prepared on CPU, not yet run on a GPU): MAE alone and beside DINO
timeout $((DEADLINE_S - (SECONDS - T0))) python3 tools/pretrain_sweep.py /tmp/sweep --budget-s "$BUDGET" \
    --common device=cuda augment_on=device batch_size=256 num_workers=4 momentum_teacher=0.996 \
             teacher_temp=0.04 warmup_teacher_temp=0.04 checkpoint_every=1000 log_every=20 mae_loss_weight=1 \
    --variant mae:dino_loss_weight=0,n_local=0,drop_path_rate=0,blr=0.0015,weight_decay=0.05,weight_decay_end=0.05 \
    --variant maedino:blr=0.0005,drop_path_rate=0.1 \
    --variant maexv:blr=0.0005,drop_path_rate=0.1,cross_view_loss_weight=1
elif [ "${SWEEP:-2}" = 3 ]; then   # third sweep: the teacher sees recoloured copies of the student's global crops
timeout $((DEADLINE_S - (SECONDS - T0))) python3 tools/pretrain_sweep.py /tmp/sweep --budget-s "$BUDGET" \
    --common device=cuda augment_on=device batch_size=256 num_workers=4 blr=0.0005 norm_last_layer=true \
             momentum_teacher=0.996 drop_path_rate=0.1 teacher_temp=0.04 warmup_teacher_temp=0.04 \
             checkpoint_every=1000 log_every=20 hue=0.5 grayscale_p=0.5 patch_loss_weight=1 teacher_recolour=true \
    --variant recolour: \
    --variant recolourinit:init_weights=nbseg/assets/embedded_vit_tiny_patch8.pt
else             # second sweep: sharper teacher (0.04 throughout), fixed last-layer norm, and a warm start
timeout $((DEADLINE_S - (SECONDS - T0))) python3 tools/pretrain_sweep.py /tmp/sweep --budget-s "$BUDGET" \
    --common device=cuda augment_on=device batch_size=256 num_workers=4 blr=0.0005 norm_last_layer=true \
             momentum_teacher=0.996 drop_path_rate=0.1 teacher_temp=0.04 warmup_teacher_temp=0.04 \
             checkpoint_every=1000 log_every=20 \
    --variant dino04:hue=0.1 \
    --variant ibot04:hue=0.5,grayscale_p=0.5,patch_loss_weight=1 \
    --variant ibot04init:hue=0.5,grayscale_p=0.5,patch_loss_weight=1,init_weights=nbseg/assets/embedded_vit_tiny_patch8.pt
fi
cp /tmp/sweep/*.pt /tmp/sweep/sweep.json "$OUT"/ 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp/sweep --exclude='*.pt' --exclude='checkpoint.pt' . 2>/dev/null
true
