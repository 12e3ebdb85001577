"""Stand-in for ``transformers_neuronx.module``."""
import torch


class PretrainedModel(torch.nn.Module):
    @classmethod
    def from_pretrained(cls, pretrained_model_path, *model_args, **kwargs):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(pretrained_model_path)
        model = cls(config, *model_args, **kwargs)
        model.load_weights(pretrained_model_path)
        return model
