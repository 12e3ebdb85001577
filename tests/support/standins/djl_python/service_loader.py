"""Stand-in for ``djl_python.service_loader``: loading ``model.py`` and calling its functions.

As the real module, minus TorchServe archives (``MAR-INF/MANIFEST.json``), which no
artifact of ours has.
"""
import importlib
import os
from importlib.machinery import SourceFileLoader


class ModelService:

    def __init__(self, module, model_dir):
        self.module = module
        self.model_dir = model_dir

    def invoke_handler(self, function_name, inputs):
        inputs.properties["model_dir"] = self.model_dir
        return getattr(self.module, function_name)(inputs)


def load_model_service(model_dir, entry_point, device_id):
    if os.path.exists(os.path.join(model_dir, "MAR-INF/MANIFEST.json")):
        raise NotImplementedError("TorchServe archives are not part of the djl_python stand-in")
    if os.path.isabs(entry_point):
        if not os.path.exists(entry_point):
            raise ValueError(f"entry-point file not found {entry_point}.")
        module = SourceFileLoader("model", entry_point).load_module()
    else:
        if entry_point.endswith(".py"):
            entry_point_file = os.path.join(model_dir, entry_point)
            entry_point = entry_point[:-3]
            if not os.path.exists(entry_point_file):
                raise ValueError(f"entry-point file not found {entry_point_file}.")
        module = importlib.import_module(entry_point)
    if module is None:
        raise ValueError(f"Unable to load entry_point {model_dir}/{entry_point}.py")
    return ModelService(module, model_dir)
