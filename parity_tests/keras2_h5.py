"""Legacy tf.keras (Keras 2) ``.h5`` model files written with h5py alone, for the tests (no tf_keras needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from implementations.spec import LayerSpec


def keras2_layer_config(name: str, layer: LayerSpec, **overrides: Any) -> dict[str, Any]:
    """A tf.keras 2 ConvLSTM2D get_config() (Keras 2 names: 'hard_sigmoid' is its default recurrent activation)."""
    rec = {"hard_sigmoid_keras2": "hard_sigmoid", "sigmoid": "sigmoid"}[layer.recurrent_activation]
    config = {
        "name": name, "trainable": True, "dtype": "float32", "return_sequences": True, "return_state": False,
        "go_backwards": False, "stateful": False, "unroll": False, "filters": layer.filters,
        "kernel_size": list(layer.kernel_size), "strides": list(layer.strides), "padding": layer.padding,
        "data_format": "channels_last", "dilation_rate": list(layer.dilation_rate), "activation": layer.activation,
        "recurrent_activation": rec, "use_bias": layer.use_bias, "unit_forget_bias": True,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "kernel_regularizer": None, "dropout": 0.0, "recurrent_dropout": 0.0,
    }
    return {**config, **overrides}


def write_keras2_h5(
    path: Path,
    weights: Any,
    *,
    functional: bool = False,
    version: str = "2.15.0",
    extra_layers: tuple[dict[str, Any], ...] = (),
    overrides: dict[str, Any] | None = None,
    inbound: list | None = None,
    with_config: bool = True,
) -> Path:
    """Mimic ``tf.keras`` ``model.save('m.h5')``: attrs model_config (JSON), model_weights/<layer>/<layer>/<w>:0."""
    names = [f"conv_lst_m2d{'_' + str(i) if i else ''}" for i in range(len(weights.spec.layers))]
    layers = [{"class_name": "InputLayer", "name": "input_1",
               "config": {"batch_input_shape": [None, None, 7, 6, weights.spec.input_channels], "name": "input_1"},
               "inbound_nodes": []}]
    for i, (name, layer) in enumerate(zip(names, weights.spec.layers)):
        source = "input_1" if i == 0 else names[i - 1]
        layers.append({"class_name": "ConvLSTM2D", "name": name,
                       "config": keras2_layer_config(name, layer, **(overrides or {})),
                       "inbound_nodes": [[[source, 0, 0, {}]]] if inbound is None or i == 0 else inbound})
    layers += list(extra_layers)
    if functional:
        body = {"name": "model", "layers": layers, "input_layers": [["input_1", 0, 0]],
                "output_layers": [[names[-1], 0, 0]]}
        config = {"class_name": "Functional", "config": body}
    else:
        for entry in layers:
            entry.pop("inbound_nodes"), entry.pop("name")
        config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = version.encode()
        f.attrs["backend"] = b"tensorflow"
        if with_config:
            f.attrs["model_config"] = json.dumps(config).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([n.encode() for n in names])
        group.attrs["keras_version"] = version.encode()
        for i, name in enumerate(names):
            layer_group = group.create_group(name)
            arrays = weights.layer(i)
            present = [n for n in ("kernel", "recurrent_kernel", "bias") if n in arrays]
            layer_group.attrs["weight_names"] = np.array([f"{name}/{n}:0".encode() for n in present])
            for n in present:
                layer_group.create_dataset(f"{name}/{n}:0", data=arrays[n])
    return path
