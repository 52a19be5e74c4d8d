"""SAM 2 model loading (hub, Meta .pt, our checkpoints, random test models), devices and the
frame preprocessing shared by tracking and training. Import the submodules directly; this
package file stays import-light."""
