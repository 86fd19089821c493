"""``vaelab explore``: a run's latent space in the browser. :mod:`.space` holds the model,
its codes and their plane; :mod:`.server` answers the page (``page.html``) over HTTP."""
