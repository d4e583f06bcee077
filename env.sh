# Source this file (bash) to use the spotvlm_ros checkout: its venv, the ROS 2 wheels and
# the colcon install space.  `scripts/dev setup` creates all three.
_spotvlm_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
if [ ! -x "$_spotvlm_root/.venv/bin/python" ] || [ ! -f "$_spotvlm_root/install/setup.bash" ]; then
    echo "spotvlm_ros is not set up in $_spotvlm_root: run scripts/dev setup first" >&2
    unset _spotvlm_root
    return 1 2>/dev/null || exit 1
fi
# colcon's and venv's scripts read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _spotvlm_nounset=1; set +u ;; *) _spotvlm_nounset= ;; esac
# shellcheck disable=SC1091
. "$_spotvlm_root/.venv/bin/activate"
# The ROS 2 wheels live in the venv prefix: CMake and the ament index must see it.
case ":${CMAKE_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" ;; esac
case ":${AMENT_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac
# shellcheck disable=SC1091
. "$_spotvlm_root/install/setup.bash"
export SPOTVLM_ROOT="$_spotvlm_root"
# Camera-sized messages need a larger Fast DDS shared-memory segment (see config/fastdds.xml).
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_spotvlm_root/config/fastdds.xml}"
# Without ros2cli there is no `ros2 run`: put the package's executables on PATH instead.
case ":$PATH:" in *":$_spotvlm_root/install/spotvlm_ros/lib/spotvlm_ros:"*) ;; *) export PATH="$_spotvlm_root/install/spotvlm_ros/lib/spotvlm_ros:$PATH" ;; esac
[ -n "$_spotvlm_nounset" ] && set -u
unset _spotvlm_root _spotvlm_nounset
