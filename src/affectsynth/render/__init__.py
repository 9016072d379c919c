"""Rendering the edited face into the photo: rasteriser, expression appearance, Poisson blend.

raster       rasterize, transfer_texture     JAX software rasteriser
appearance/  apply_appearance                shading, wrinkles, mouth interior, eyes
multigrid    (internal)                      the masked Laplacian and its multigrid preconditioner
poisson      poisson_blend                   preconditioned conjugate-gradient Poisson blend
"""
