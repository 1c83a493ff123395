"""Models with known circuits: RASP programs compiled by tracr, converted to the engine's ``ModelSpec``.

    from acdc_engine.tracr import PROGRAMS, compiled_program, structural_circuit
    compiled = compiled_program("tracr-reverse")        # cached; compiled with tracr on a miss
    model = compiled.model()                            # a ModelSpec (float32)
    truth = structural_circuit(model, compiled.residual_labels)

Modules: ``programs`` (which programs, vocabularies, inputs), ``compiler`` (tracr -> ModelSpec,
checked against tracr), ``cache`` (compiled programs on disk), ``ground_truth`` (the circuit implied by
the weights). Needs the optional dependency tracr-pypi (``pip install 'acdc-engine[tracr]'``).
"""

from acdc_engine.tracr.cache import compiled_program, load_tracr_model
from acdc_engine.tracr.compiler import CompiledProgram
from acdc_engine.tracr.ground_truth import structural_circuit
from acdc_engine.tracr.programs import PROGRAMS, TracrProgram

__all__ = ["PROGRAMS", "CompiledProgram", "TracrProgram", "compiled_program", "load_tracr_model", "structural_circuit"]
