"""One package per service; each exports SERVICE (see runtime/service.py), listed in app.py."""
