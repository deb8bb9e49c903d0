"""Train a tiny LeRobot ACT policy for a few steps on a LeRobot dataset folder and save it the way
LeRobot saves policies (config.json, model.safetensors, policy_preprocessor.json,
policy_postprocessor.json and their normalisation stats).

Run by tests/test_lerobot_policy.py with the interpreter of the separate LeRobot environment:

    python tests/lerobot_train_tiny.py DATASET_FOLDER OUT_FOLDER [STEPS]
"""

import sys

import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.factory import make_policy, make_pre_post_processors

root, out = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
torch.manual_seed(0)
chunk = 4
ds = LeRobotDataset("wfm_sim/export", root=root, video_backend="pyav",
                    delta_timestamps={"action": [i / 10 for i in range(chunk)]})
cfg = ACTConfig(device="cpu", chunk_size=chunk, n_action_steps=chunk, dim_model=32, n_heads=2, dim_feedforward=64,
                n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8, use_vae=False,
                pretrained_backbone_weights=None)
policy = make_policy(cfg, ds_meta=ds.meta)
pre, post = make_pre_post_processors(cfg, dataset_stats=ds.meta.stats)
loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=0)
opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
policy.train()
done = 0
while done < steps:
    for batch in loader:
        batch = pre(batch)
        # ACT reads observation.state's device even when it has no state input (lerobot 0.4.4):
        # an image-only policy gets an empty state, as tests/../policies/lerobot_serve.py gives it.
        batch.setdefault("observation.state", torch.zeros(len(batch["action"]), 0))
        loss, _ = policy.forward(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if done == steps:
            break
policy.save_pretrained(out)
pre.save_pretrained(out)
post.save_pretrained(out)
print(f"trained {steps} steps, last loss {loss.item():.4f}")
