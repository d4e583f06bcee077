# Source this file (bash) to use the spotvlm_ros checkout: its venv, the ROS 2 wheels and
# the colcon install space of one ROS 2 distro. `scripts/dev setup [--distro jazzy|kilted]`
# creates them; this uses the distro named by SPOTVLM_ROS_DISTRO, else the one set up last.
_spotvlm_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
_spotvlm_distro="${SPOTVLM_ROS_DISTRO:-}"
if [ -z "$_spotvlm_distro" ] && [ -f "$_spotvlm_root/.spotvlm-distro" ]; then
    _spotvlm_distro="$(cat "$_spotvlm_root/.spotvlm-distro")"
fi
_spotvlm_distro="${_spotvlm_distro:-jazzy}"
if [ -n "${SPOTVLM_ENV_DISTRO:-}" ] && [ "$SPOTVLM_ENV_DISTRO" != "$_spotvlm_distro" ]; then
    # the first distro's paths would stay ahead of the second's
    echo "this shell already uses ROS 2 $SPOTVLM_ENV_DISTRO (env.sh): open a new shell for $_spotvlm_distro" >&2
    unset _spotvlm_root _spotvlm_distro
    return 1 2>/dev/null || exit 1
fi
_spotvlm_venv="$_spotvlm_root/.venv-$_spotvlm_distro"
_spotvlm_install="$_spotvlm_root/install/$_spotvlm_distro"
if [ ! -x "$_spotvlm_venv/bin/python" ] || [ ! -f "$_spotvlm_install/setup.bash" ]; then
    echo "spotvlm_ros is not set up for ROS 2 $_spotvlm_distro in $_spotvlm_root: run scripts/dev setup --distro $_spotvlm_distro first" >&2
    unset _spotvlm_root _spotvlm_distro _spotvlm_venv _spotvlm_install
    return 1 2>/dev/null || exit 1
fi
# colcon's and venv's scripts read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _spotvlm_nounset=1; set +u ;; *) _spotvlm_nounset= ;; esac
# shellcheck disable=SC1091
. "$_spotvlm_venv/bin/activate"
# The ROS 2 wheels live in the venv prefix: CMake and the ament index must see it.
case ":${CMAKE_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" ;; esac
case ":${AMENT_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac
# shellcheck disable=SC1091
. "$_spotvlm_install/setup.bash"
export SPOTVLM_ROOT="$_spotvlm_root"
export SPOTVLM_ROS_DISTRO="$_spotvlm_distro" SPOTVLM_ENV_DISTRO="$_spotvlm_distro"
# Camera-sized messages need a larger Fast DDS shared-memory segment (see config/fastdds.xml),
# under both names: Fast DDS 3.x (Kilted) reads FASTDDS_..., 2.x (Jazzy, Humble) FASTRTPS_...
_spotvlm_profile="${FASTDDS_DEFAULT_PROFILES_FILE:-${FASTRTPS_DEFAULT_PROFILES_FILE:-$_spotvlm_root/config/fastdds.xml}}"
export FASTDDS_DEFAULT_PROFILES_FILE="$_spotvlm_profile" FASTRTPS_DEFAULT_PROFILES_FILE="$_spotvlm_profile"
# Without ros2cli there is no `ros2 run`: put the package's executables on PATH instead.
case ":$PATH:" in *":$_spotvlm_install/spotvlm_ros/lib/spotvlm_ros:"*) ;; *) export PATH="$_spotvlm_install/spotvlm_ros/lib/spotvlm_ros:$PATH" ;; esac
[ -n "$_spotvlm_nounset" ] && set -u
unset _spotvlm_root _spotvlm_nounset _spotvlm_distro _spotvlm_venv _spotvlm_install _spotvlm_profile
