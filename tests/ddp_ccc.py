"""Run by test_model.py under `accelerate launch --multi_gpu --num_processes 2` on CPU: the
VA loss of clips split over two processes, with the rows gathered, must equal (value and
DDP-averaged gradient) the loss of the whole batch on one process."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState

from reasoning.model.dual_encoder import DualEncoderLLM
from reasoning.training.distributed import gather_rows

state = PartialState(cpu=True)  # the launch is on CPU processes
torch.manual_seed(0)
x, target = torch.randn(7, 3), torch.randn(7, 2)
target[5, 0] = float("nan")  # a clip without VA
w = torch.randn(3, 2, requires_grad=True)
head = DualEncoderLLM.__new__(DualEncoderLLM)  # only the loss settings _va_loss reads
head.va_loss, head.gather = "ccc_mse", None

full = head._va_loss(x @ w, target)
(g_full,) = torch.autograd.grad(full, w)

head.gather = gather_rows
mine = slice(state.process_index, None, state.num_processes)  # 4 rows on rank 0, 3 on rank 1
split = head._va_loss(x[mine] @ w, target[mine])
(g_split,) = torch.autograd.grad(split, w)
dist.all_reduce(g_split)  # what DDP does with the gradients: their mean over the processes
g_split /= state.num_processes
out = Path(sys.argv[1]) / f"ccc{state.process_index}.json"
out.write_text(json.dumps({"full": full.item(), "split": split.item(),
                           "grad_gap": (g_full - g_split).abs().max().item()}))
dist.barrier()  # both ranks are done with their collectives before the group goes
dist.destroy_process_group()
