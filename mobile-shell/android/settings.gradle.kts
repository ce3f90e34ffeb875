rootProject.name = "gridlink"
include(":app")
