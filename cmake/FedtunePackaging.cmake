# Debian packages (CPack DEB, one per component), built by deploy/package.sh:
#   fedtune-site         fedtune-site, its systemd unit, /etc/fedtune/site.toml
#   fedtune-coordinator  fedtune-coordinator and the operator's fedtune, its unit,
#                        /etc/fedtune/coordinator.toml, an example job.toml, fedtune-certs
# Both create the system user fedtune, /var/lib/fedtune (0700) and
# /etc/fedtune (0750 root:fedtune) in their postinst (deploy/debian/), and
# start nothing: a daemon needs its configuration and certificates first.
# Packages always install under /usr, whatever CMAKE_INSTALL_PREFIX says
# (that one is for `cmake --install`).
set(_deb "${PROJECT_SOURCE_DIR}/deploy/debian")
set(_gen "${PROJECT_BINARY_DIR}/debian")
file(MAKE_DIRECTORY "${_gen}/site" "${_gen}/coordinator")

# The systemd units with the packaged paths.
foreach(_unit fedtune-site fedtune-coordinator)
  file(READ "${PROJECT_SOURCE_DIR}/deploy/systemd/${_unit}.service" _text)
  string(REPLACE "/usr/local/bin/" "/usr/bin/" _text "${_text}")
  file(WRITE "${_gen}/${_unit}.service" "${_text}")
endforeach()

# /usr/share/doc/<package>/changelog.gz (a native package's changelog) and copyright.
set(FEDTUNE_PACKAGE_VERSION "${PROJECT_VERSION}")
configure_file("${_deb}/changelog" "${_gen}/changelog" @ONLY)
execute_process(COMMAND gzip -9nc "${_gen}/changelog" OUTPUT_FILE "${_gen}/changelog.gz")

set(_components site coordinator)
foreach(_c IN LISTS _components)
  set(_pkg "fedtune-${_c}")
  install(FILES "${_gen}/changelog.gz" "${_deb}/copyright" DESTINATION share/doc/${_pkg}
          COMPONENT ${_c} EXCLUDE_FROM_ALL)
  install(FILES "${_gen}/${_pkg}.service" DESTINATION /lib/systemd/system COMPONENT ${_c} EXCLUDE_FROM_ALL)
endforeach()
install(TARGETS fedtune-site RUNTIME DESTINATION bin COMPONENT site EXCLUDE_FROM_ALL)
install(FILES deploy/examples/site.toml DESTINATION /etc/fedtune COMPONENT site EXCLUDE_FROM_ALL)
install(TARGETS fedtune-coordinator fedtune RUNTIME DESTINATION bin COMPONENT coordinator EXCLUDE_FROM_ALL)
install(PROGRAMS certs/fedtune-certs DESTINATION bin COMPONENT coordinator EXCLUDE_FROM_ALL)
install(FILES deploy/examples/coordinator.toml DESTINATION /etc/fedtune COMPONENT coordinator EXCLUDE_FROM_ALL)
install(FILES deploy/examples/job.toml DESTINATION share/doc/fedtune-coordinator/examples
        COMPONENT coordinator EXCLUDE_FROM_ALL)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fedtune)
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
# Who answers for the packages (the federation's operators): set it when packaging.
set(FEDTUNE_PACKAGE_MAINTAINER "fedtune maintainers <fedtune@example.org>" CACHE STRING
    "Maintainer field of the .deb packages (name <address>)")
set(CPACK_PACKAGE_CONTACT "${FEDTUNE_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL ${_components})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://fedtune.invalid/")
set(CPACK_DEBIAN_SITE_PACKAGE_NAME fedtune-site)
set(CPACK_DEBIAN_COORDINATOR_PACKAGE_NAME fedtune-coordinator)
# useradd (passwd) and openssl for fedtune-certs; deb-systemd-invoke is in the essential init-system-helpers.
set(CPACK_DEBIAN_SITE_PACKAGE_DEPENDS "passwd")
set(CPACK_DEBIAN_COORDINATOR_PACKAGE_DEPENDS "passwd, openssl")
set(CPACK_COMPONENT_SITE_DESCRIPTION
    "fedtune site agent: federated fine-tuning at a hospital
The site agent de-identifies the hospital's radiographs (DICOM PS3.15),
splits them by patient, fine-tunes the federation's model on them and
returns only model updates and aggregate metrics to the coordinator over
mutual TLS. It can receive images from the PACS (a DICOM storage SCP) and
serve the promoted model to the hospital's own clients (Open Inference
Protocol v2, DICOM in and findings out).")
set(CPACK_COMPONENT_COORDINATOR_DESCRIPTION
    "fedtune coordinator and operator CLI: federated fine-tuning
The coordinator schedules rounds across the hospitals' site agents,
aggregates their updates (FedAvg and other strategies), keeps every
site's metrics and renders cross-institution reports. The package also
holds the operator's command-line tool and the certificate script.")
set(CPACK_DEBIAN_SITE_PACKAGE_CONTROL_EXTRA
    "${_deb}/site/postinst;${_deb}/site/prerm;${_deb}/site/postrm;${_deb}/site/conffiles")
set(CPACK_DEBIAN_COORDINATOR_PACKAGE_CONTROL_EXTRA
    "${_deb}/coordinator/postinst;${_deb}/coordinator/prerm;${_deb}/coordinator/postrm;${_deb}/coordinator/conffiles")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
