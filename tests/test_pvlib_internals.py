"""audit/solar.py reuses pvlib's solar position internals (``pvlib.spa``'s step functions,
``pvlib.solarposition._datetime_to_unixtime``), which pvlib does not promise to keep. pyproject.toml pins
pvlib to the minor release these tests pass on; these tests say what changed when the pin is raised:
a name used that is gone or takes other parameters, a new internal used without being recorded here, or
results that no longer equal pvlib's own public path.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pytest
from pvlib import spa

from audit import solar

SOLAR = Path(solar.__file__)
# every pvlib attribute audit/solar.py reaches through a module alias, with the parameters it relies on
USED: dict[str, tuple[str, ...]] = {
    "atmosphere.alt2pres": ("altitude",),
    "solarposition._datetime_to_unixtime": ("dtindex",),
    "spa.USE_NUMBA": (),
    "spa.julian_day": ("unixtime",),
    "spa.julian_ephemeris_day": ("julian_day", "delta_t"),
    "spa.julian_century": ("julian_day",),
    "spa.julian_ephemeris_century": ("julian_ephemeris_day",),
    "spa.julian_ephemeris_millennium": ("julian_ephemeris_century",),
    "spa.heliocentric_radius_vector": ("jme",),
    "spa.heliocentric_longitude": ("jme",),
    "spa.heliocentric_latitude": ("jme",),
    "spa.geocentric_longitude": ("heliocentric_longitude",),
    "spa.geocentric_latitude": ("heliocentric_latitude",),
    "spa.mean_elongation": ("julian_ephemeris_century",),
    "spa.mean_anomaly_sun": ("julian_ephemeris_century",),
    "spa.mean_anomaly_moon": ("julian_ephemeris_century",),
    "spa.moon_argument_latitude": ("julian_ephemeris_century",),
    "spa.moon_ascending_longitude": ("julian_ephemeris_century",),
    "spa.longitude_obliquity_nutation": ("julian_ephemeris_century", "x0", "x1", "x2", "x3", "x4", "out"),
    "spa.mean_ecliptic_obliquity": ("julian_ephemeris_millennium",),
    "spa.true_ecliptic_obliquity": ("mean_ecliptic_obliquity", "obliquity_nutation"),
    "spa.aberration_correction": ("earth_radius_vector",),
    "spa.apparent_sun_longitude": ("geocentric_longitude", "longitude_nutation", "aberration_correction"),
    "spa.mean_sidereal_time": ("julian_day", "julian_century"),
    "spa.apparent_sidereal_time": ("mean_sidereal_time", "longitude_nutation", "true_ecliptic_obliquity"),
    "spa.geocentric_sun_right_ascension": ("apparent_sun_longitude", "true_ecliptic_obliquity",
                                           "geocentric_latitude"),
    "spa.geocentric_sun_declination": ("apparent_sun_longitude", "true_ecliptic_obliquity", "geocentric_latitude"),
    "spa.local_hour_angle": ("apparent_sidereal_time", "observer_longitude", "sun_right_ascension"),
    "spa.equatorial_horizontal_parallax": ("earth_radius_vector",),
    "spa.uterm": ("observer_latitude",),
    "spa.xterm": ("u", "observer_latitude", "observer_elevation"),
    "spa.yterm": ("u", "observer_latitude", "observer_elevation"),
    "spa.parallax_sun_right_ascension": ("xterm", "equatorial_horizontal_parallax", "local_hour_angle",
                                         "geocentric_sun_declination"),
    "spa.topocentric_sun_declination": ("geocentric_sun_declination", "xterm", "yterm",
                                        "equatorial_horizontal_parallax", "parallax_sun_right_ascension",
                                        "local_hour_angle"),
    "spa.topocentric_local_hour_angle": ("local_hour_angle", "parallax_sun_right_ascension"),
    "spa.topocentric_elevation_angle_without_atmosphere": ("observer_latitude", "topocentric_sun_declination",
                                                           "topocentric_local_hour_angle"),
    "spa.atmospheric_refraction_correction": ("local_pressure", "local_temp",
                                              "topocentric_elevation_angle_wo_atmosphere", "atmos_refract"),
    "spa.topocentric_elevation_angle": ("topocentric_elevation_angle_without_atmosphere",
                                        "atmospheric_refraction_correction"),
    "spa.topocentric_zenith_angle": ("topocentric_elevation_angle",),
}
MODULES = {"spa": spa, "solarposition": pvlib.solarposition, "atmosphere": pvlib.atmosphere}


def _used_in_solar() -> set[str]:
    return {f"{node.value.id}.{node.attr}" for node in ast.walk(ast.parse(SOLAR.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in MODULES}


def test_every_pvlib_internal_that_solar_uses_is_recorded_here() -> None:
    assert _used_in_solar() == set(USED), "audit/solar.py uses pvlib internals not recorded in USED (or no longer)"


@pytest.mark.parametrize("name", sorted(USED))
def test_pvlib_internal_exists_with_the_parameters_solar_relies_on(name: str) -> None:
    module, attr = name.split(".")
    assert hasattr(MODULES[module], attr), f"pvlib {pvlib.__version__} has no {name}"
    obj = getattr(MODULES[module], attr)
    if USED[name]:
        params = tuple(inspect.signature(obj).parameters)
        assert params[:len(USED[name])] == USED[name], f"{name}{params} in pvlib {pvlib.__version__}"


def test_the_numpy_spa_path_is_the_one_in_use() -> None:
    # with PVLIB_USE_NUMBA set pvlib compiles its own SPA and clear_sky_ghi defers to it; the tests of the
    # internals' results below (and the bit-identity test in test_audit.py) assume the numpy path
    assert spa.USE_NUMBA is False


def test_solar_position_from_the_internals_equals_pvlibs_public_solar_position() -> None:
    ts = 1_717_200_000_000 + np.arange(0, 2 * 86_400_000, 300_000, dtype=np.int64)
    times = pd.DatetimeIndex(pd.to_datetime(ts, unit="ms", utc=True))
    for lat, lon in [(52.1, 5.1), (-33.9, 151.2)]:
        loc = pvlib.location.Location(lat, lon, tz="UTC")
        ours = solar._solar_position(times, lat, lon, float(loc.altitude))
        ref = loc.get_solarposition(times)
        for col in ["apparent_zenith", "zenith", "apparent_elevation", "elevation"]:
            assert np.array_equal(ours[col].to_numpy(), ref[col].to_numpy()), (col, lat, lon)
