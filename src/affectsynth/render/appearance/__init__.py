"""Expression appearance, one module per cue; ``apply_appearance`` runs the enabled ones in order.

context    AppearanceOptions, AppearanceContext, named_action_units (a model's AUs in the cues' order)
shading    the shading ratio of the deformed surface under the photo's lighting
wrinkles   AU-driven furrows on the template surface
mouth      the mouth interior (cavity, teeth, tongue)
eyes       lids over a static eye
compose    apply_appearance
"""

from .compose import apply_appearance as apply_appearance
from .context import AppearanceContext as AppearanceContext
from .context import AppearanceOptions as AppearanceOptions
