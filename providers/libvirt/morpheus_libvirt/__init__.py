"""Morpheus provider plugin: forests as KVM/QEMU virtual machines through libvirt.

Registered as ``libvirt`` under the ``morpheus.providers`` entry-point group; the libvirt
binding is imported only when a node is touched (see ``morpheus_libvirt.binding``).
"""
