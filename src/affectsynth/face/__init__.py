"""The face in the photo: its landmarks, the mesh they form, the morphable model and its fit.

landmarks   detect_landmarks                MediaPipe FaceMesh (host side), 478 points in pixels
topology    face_topology, subdivide        the FaceMesh triangle mesh, regions, canonical frame
geometry    similarity fits, closest points one home for the geometric routines
correspondence template_correspondence    where the template's points lie on another face mesh
morphable   MorphableModel, morphable_model the linear face model and its bases
fit         fit_morphable_model             pose + identity + expression fit to landmarks (optax, vmap)
"""
