"""The expression knowledge: the V-A grid, Action Unit fields, the V-A -> AU map, galleries and the model.

grid               AffectGrid, class_index, EMOTION_PRESETS   the 10 x 10 valence-arousal classes
paths              parse_path, resample_path                  V-A paths for animations and grids
au_fields          action_unit_fields, expression_basis       FACS Action Units as 3D deformation fields
va_map             au_intensities                             V-A target -> AU intensities
gallery            read_gallery, write_gallery                labelled 3D expression corpora (format)
synthetic_gallery  generate_gallery                           a generated gallery from the AU fields
splocs             learn_splocs                               sparse localised deformation components
build              build_affect_model                         gallery -> per-class model
model              AffectModel, class_deformation             the model (queries, file format)
default            default_model                              the built-in model, built once and cached
importers/ict      import_ict_model                           ICT-FaceKit as an expression model
"""
