"""IRPModel: utterance tokens fused with summarized product metadata, one transformer encoder, one logit.

Reads top to bottom: embed the text tokens, summarize the products into one vector per attribute (mean/max
over the top-k products of the mean token embedding of each attribute value), write those vectors into the
slot positions after the text, run the encoder, mean-pool, and project to a logit. `forward` returns
`(logits, loss)`; the training loop lives in `irp.train`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from irp.config import IRPConfig
from irp.fileio import atomic_path
from irp.losses import distillation_loss, irp_loss
from irp.model.encoder import encoder_from_config
from irp.model.summarize import pool_products


class IRPModel(nn.Module):
    def __init__(self, encoder: PreTrainedModel, config: IRPConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.config = config
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # we mean-pool token states; an unused pooler would also break DDP's reducer
        self.encoder = encoder
        self.pad_id = pad_id
        hidden = encoder.config.hidden_size
        n_attrs = len(config.product_fields) if config.uses_slots else 0
        # Learned attribute-type embedding: tells the encoder which slot holds title, brand, color, ...
        self.attr_type = nn.Embedding(max(n_attrs, 1), hidden)
        nn.init.normal_(self.attr_type.weight, std=0.02)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden, 1)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    def summarize_products(self, value_ids: torch.Tensor, value_index: torch.Tensor) -> torch.Tensor:
        """value_ids [U, Lv] distinct attribute values of the batch; value_index [B, K, F] (-1 absent) -> [B, F, H]."""
        token_mask = (value_ids != self.pad_id).unsqueeze(-1)  # [U, Lv, 1]
        token_emb = self.word_embeddings(value_ids)  # [U, Lv, H]
        value_emb = (token_emb * token_mask).sum(1) / token_mask.sum(1).clamp(min=1)  # [U, H]
        present = value_index >= 0  # [B, K, F]
        per_product = value_emb[value_index.clamp(min=0)]  # [B, K, F, H]
        pooled = pool_products(per_product, present, self.config.summarizer)  # [B, F, H]
        return pooled + self.attr_type.weight[: pooled.shape[1]]

    def encoder_mask(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, T] 0/1 -> the [B, 1, 1, T] mask the encoder's attention applies as it is.

        Given a 2-D mask, transformers tests `mask.all()` on every call to drop a mask without padding: a
        host-device sync per step on CUDA, which stalls the queue of kernel launches. A 4-D mask skips that.
        The ONNX export keeps the 2-D mask (its graph, and ONNX Runtime's attention fusion, stay as they were).
        """
        keep = attention_mask[:, None, None, :]
        if self.encoder.config._attn_implementation == "sdpa":
            return keep.bool()  # SDPA: True = attend
        return (1.0 - keep.to(dtype)) * torch.finfo(dtype).min  # eager: added to the scores

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T]
        attention_mask: torch.Tensor,  # [B, T]
        token_type_ids: torch.Tensor | None = None,  # [B, T], 1 at product slots
        slot_mask: torch.Tensor | None = None,  # [B, T] bool, F True positions per row, after the text
        value_ids: torch.Tensor | None = None,
        value_index: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,  # [B] float 0/1 (NaN: no label, only with soft_targets)
        soft_targets: torch.Tensor | None = None,  # [B] the teachers' averaged probability at temperature T
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        embeds = self.word_embeddings(input_ids)  # [B, T, H]
        if value_ids is not None and slot_mask is not None:
            summary = self.summarize_products(value_ids, value_index)  # [B, F, H]
            # Slots are in row-major order, so a masked scatter places slot f of row b at its position.
            embeds = embeds.masked_scatter(slot_mask.unsqueeze(-1), summary.to(embeds.dtype))
        if token_type_ids is not None and getattr(self.encoder.config, "type_vocab_size", 0) < 2:
            token_type_ids = None  # RoBERTa has a single token type, MPNet none (slots are told by attr_type)
        exporting = torch.onnx.is_in_onnx_export()
        encoder_mask = attention_mask if exporting else self.encoder_mask(attention_mask, embeds.dtype)
        hidden = self.encoder(
            inputs_embeds=embeds, attention_mask=encoder_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # [B, T, H]
        # Pool and project in fp32 even under bf16 autocast: a bf16 logit has 8 mantissa bits, which would put
        # the probabilities on a coarse grid, tie many scores and make the threshold choice jumpy.
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            hidden = hidden.float()
            mask = attention_mask.unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B, H]
            logits = self.head(self.dropout(pooled)).squeeze(-1)  # [B]
        loss = None
        if labels is not None and soft_targets is not None:  # irp distill
            cfg = self.config
            loss = distillation_loss(logits, labels.float(), soft_targets.float(), cfg.loss, cfg.alpha, cfg.beta,
                                     cfg.distill_alpha, cfg.temperature)
        elif labels is not None:
            loss = irp_loss(logits, labels.float(), self.config.loss, self.config.alpha, self.config.beta)
        return logits, loss

    # ---- persistence: config + safetensors, never pickle ----------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        with atomic_path(directory / "encoder_config.json") as tmp:
            tmp.write_text(json.dumps(self.encoder.config.to_dict(), indent=2))

    @classmethod
    def load(cls, directory: str | Path, config: IRPConfig, pad_id: int, device: str = "cpu") -> IRPModel:
        directory = Path(directory)
        encoder_config = json.loads((directory / "encoder_config.json").read_text())
        model = cls(encoder_from_config(encoder_config), config, pad_id)
        state = load_file(str(directory / "model.safetensors"), device="cpu")
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()
